package meta

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cryptinit/cryptinit/unlock/config"
)

// Where STATE's encryption config came from.
const (
	SourceMachineConfig = "machine config"
	SourceMETA          = "META"
)

// StateConfig picks STATE's encryption config: the machine config's when it
// has an encrypted STATE document (the machine config always wins), else
// META tag 9. When the machine config's is used, is authenticated
// (config.Trust) and tag 9 differs, tag 9 is updated in m and changed is
// true: the caller writes m back, so that a boot without the machine config
// still opens STATE. A machine config that is not authenticated (one on an
// ESP) opens STATE but never changes tag 9, which is Talos's record of
// STATE's keys. vol is nil (and err nil) when neither source encrypts
// STATE. A config from tag 9 is never authenticated; the machine config's
// keeps the trust its loader gave it.
func StateConfig(cfg *config.Config, m *Meta) (vol *config.Volume, source string, changed bool, err error) {
	if cfg != nil {
		if v := cfg.Volume(config.StateVolume); v != nil && v.Encrypted() {
			data, err := EncodeStateConfig(v.Encryption)
			if err != nil {
				return nil, "", false, fmt.Errorf("encode STATE config for META: %w", err)
			}
			if m != nil && v.Trust.Authenticated {
				if old, ok := m.Get(TagStateEncryptionConfig); !ok || !bytes.Equal(old, data) {
					m.Set(TagStateEncryptionConfig, data)
					changed = true
				}
			}
			return v, SourceMachineConfig, changed, nil
		}
	}
	if m == nil {
		return nil, "", false, nil
	}
	data, ok := m.Get(TagStateEncryptionConfig)
	if !ok {
		return nil, "", false, nil
	}
	e, err := DecodeStateConfig(data)
	if err != nil {
		return nil, "", false, err
	}
	// tag 9 is cleartext that whoever holds the disk can write: it may
	// open STATE, never change its key slots
	trust := config.Trust{Source: "META tag 9"}
	return &config.Volume{ID: config.StateVolume, Kind: config.KindVolumeConfig, Name: config.StateVolume, Encryption: e, Trust: trust}, SourceMETA, false, nil
}

// ReadStateConfig is StateConfig on a META device: it reads META, resolves,
// and writes META back when tag 9 had to change. A blank META is treated as
// empty (and initialised only if tag 9 must be written, i.e. by an
// authenticated machine config).
func ReadStateConfig(cfg *config.Config, dev ReadWriterAt) (*config.Volume, string, error) {
	m, err := Read(dev)
	return ResolveStateConfig(cfg, dev, m, err)
}

// ResolveStateConfig is ReadStateConfig for a META the caller has read
// already: m and readErr are what Read returned. The boot reads META once
// (256 KiB and its checksum are ~10 ms each under TCG) for every question
// it asks of it.
func ResolveStateConfig(cfg *config.Config, dev ReadWriterAt, m *Meta, readErr error) (*config.Volume, string, error) {
	switch {
	case errors.Is(readErr, ErrBlank):
		m = New()
	case readErr != nil:
		// A corrupt META must not block a machine config that has STATE:
		// use it, but do not overwrite META we could not read.
		vol, src, _, err2 := StateConfig(cfg, nil)
		if vol != nil && err2 == nil {
			return vol, src, nil
		}
		return nil, "", fmt.Errorf("read META: %w", readErr)
	}
	vol, src, changed, err := StateConfig(cfg, m)
	if err != nil {
		return nil, "", err
	}
	if changed {
		if err := m.Write(dev); err != nil {
			return vol, src, fmt.Errorf("update META tag 9 to match the machine config: %w", err)
		}
	}
	return vol, src, nil
}

// ReadWriterAt is a META partition.
type ReadWriterAt interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}
