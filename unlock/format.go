package unlock

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// format writes a new LUKS2 header with the first key that can be created.
// Known window: for a kms/tpm first key the token is written right after
// the header; a crash in between leaves a volume with no data whose key
// cannot be derived, which needs a wipe (the volume was never used).
func (e *Engine) format(ctx context.Context, vol *config.Volume, dev luks2.Device, size int64) (*Result, error) {
	ks, err := configuredKeys(vol)
	if err != nil {
		return nil, err
	}
	res := &Result{VolumeID: vol.ID, Slot: -1, Formatted: true}
	for _, ck := range ks {
		k, err := keys.FromConfig(ck, e.env())
		kind := ck.Kind()
		if k != nil {
			kind = k.Kind()
		}
		start := e.now()
		var enr *keys.Enrollment
		if err == nil {
			kctx, cancel := e.keyContext(ctx)
			enr, err = k.Enroll(kctx, keys.Slot{VolumeID: vol.ID, Slot: ck.Slot})
			cancel()
		}
		fetched := e.now()
		if err != nil {
			d := fetched.Sub(start)
			res.Attempts = append(res.Attempts, Attempt{Slot: ck.Slot, Kind: kind, Err: err, Duration: d, KeyDuration: d})
			e.log().Info("key cannot be created", "volume", vol.ID, "slot", ck.Slot, "kind", kind, "err", err)
			continue
		}
		vk, hdr, err := e.formatWith(vol, dev, size, ck, enr)
		enr.Zero()
		end := e.now()
		res.Attempts = append(res.Attempts, Attempt{Slot: ck.Slot, Kind: kind, Err: err, Duration: end.Sub(start),
			KeyDuration: fetched.Sub(start), KDFDuration: end.Sub(fetched)})
		if err != nil {
			return nil, fmt.Errorf("format %s with slot %d (%s): %w", vol.ID, ck.Slot, kind, err)
		}
		res.VolumeKey, res.Slot, res.Kind, res.UUID = vk, ck.Slot, kind, hdr.UUID
		e.log().Info("formatted", "volume", vol.ID, "slot", ck.Slot, "kind", kind)
		if err := e.fillMapping(res, vol, hdr); err != nil {
			res.Zero()
			return nil, err
		}
		return res, nil
	}
	return nil, &OpenError{Volume: vol.ID, Op: "format", Attempts: res.Attempts, Err: ErrNoKeyEnrolls}
}

func (e *Engine) formatWith(vol *config.Volume, dev luks2.Device, size int64, ck config.Key, enr *keys.Enrollment) ([]byte, *luks2.Header, error) {
	enc := vol.Encryption
	keySize := enc.KeySize
	if keySize == 0 {
		keySize = 512
	}
	vk := make([]byte, keySize/8)
	r := e.Rand
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, vk); err != nil {
		return nil, nil, fmt.Errorf("volume key: %w", err)
	}
	opts := luks2.FormatOptions{
		Slot:       ck.Slot,
		Cipher:     enc.Cipher,
		KeySize:    keySize,
		SectorSize: enc.BlockSize,
		KDF:        kdfFor(enc),
		VolumeKey:  vk,
	}
	hdr, err := luks2.Format(dev, size, enr.Passphrase, opts)
	if err != nil {
		keys.Zero(vk)
		return nil, nil, err
	}
	if tok, err := slotToken(ck, enr.Token); err != nil {
		keys.Zero(vk)
		return nil, nil, err
	} else if tok != nil {
		if _, err := luks2.ImportToken(dev, ck.Slot, tok, true); err != nil {
			keys.Zero(vk)
			return nil, nil, fmt.Errorf("store token %d: %w", ck.Slot, err)
		}
		if hdr, err = luks2.ReadHeader(dev); err != nil {
			keys.Zero(vk)
			return nil, nil, err
		}
	}
	return vk, hdr, nil
}

// slotToken is the token to store with id == slot for a configured key:
// the kind's token, marked when the key is a recovery key.
func slotToken(ck config.Key, token []byte) ([]byte, error) {
	if ck.Recovery {
		return keys.RecoveryToken(token)
	}
	return token, nil
}

// kdfFor turns the config's KDF costs into LUKS2's, defaults for the rest.
func kdfFor(enc *config.Encryption) luks2.KDF {
	kdf := luks2.DefaultKDF()
	c := enc.KDF
	if c == nil {
		return kdf
	}
	if c.Type != "" {
		kdf.Type = c.Type
	}
	if kdf.Type == "pbkdf2" {
		kdf.Hash = "sha256"
		kdf.Iterations = c.Iterations
		if kdf.Iterations == 0 {
			kdf.Iterations = 600000
		}
		kdf.Memory, kdf.Time, kdf.Parallel = 0, 0, 0
		return kdf
	}
	if c.MemoryKiB > 0 {
		kdf.Memory = c.MemoryKiB
	}
	if c.Iterations > 0 {
		kdf.Time = c.Iterations
	}
	if c.Parallelism > 0 {
		kdf.Parallel = c.Parallelism
	}
	return kdf
}
