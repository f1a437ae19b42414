package luks2

import (
	"crypto/rand"
	"fmt"
)

// loadForWrite reads the current metadata and refuses volumes this package
// must not rewrite. It returns a private copy of the metadata to modify.
func loadForWrite(dev Device) (*Header, *metadata, error) {
	h, err := ReadHeader(dev)
	if err != nil {
		return nil, nil, err
	}
	if h.Version == 1 {
		return nil, nil, ErrLUKS1ReadOnly
	}
	if h.meta == nil {
		return nil, nil, fmt.Errorf("LUKS2 volume %s: %w", h.UUID, ErrUnknownMetadata)
	}
	if len(h.Requirements) > 0 {
		return nil, nil, fmt.Errorf("LUKS2 volume %s: %w: %v", h.UUID, ErrRequirements, h.Requirements)
	}
	if h.checksum != "sha256" {
		return nil, nil, fmt.Errorf("LUKS2 volume %s: rewriting a header with %s checksums: %w", h.UUID, h.checksum, ErrUnsupported)
	}
	return h, h.meta.clone(), nil
}

// update is a fully encoded next metadata generation, ready to write. It is
// built before anything is written, so that metadata that does not fit or
// does not validate is refused with the device untouched.
type update struct {
	hdrSize   uint64
	secondary []byte
	primary   []byte
}

// prepare encodes m as metadata generation seqid for both copies.
func prepare(hdrSize, seqid uint64, uuid, label, subsystem string, m *metadata) (*update, error) {
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("refusing to write invalid metadata: %w", err)
	}
	text, err := m.encode()
	if err != nil {
		return nil, err
	}
	u := &update{hdrSize: hdrSize}
	for _, c := range []struct {
		dst *[]byte
		off int64
	}{{&u.secondary, int64(hdrSize)}, {&u.primary, 0}} {
		salt := make([]byte, lenSalt)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		if *c.dst, err = encodeCopy(c.off, hdrSize, seqid, label, uuid, subsystem, text, salt); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// prepareNext encodes m as the generation after h.
func prepareNext(h *Header, m *metadata) (*update, error) {
	return prepare(h.MetadataSize, h.Seqid+1, h.UUID, h.Label, h.Subsystem, m)
}

// write puts the update on dev: secondary copy first, then primary (see the
// package doc). Until the secondary is on disk the old metadata is the only
// valid one; afterwards the new one has the higher seqid and wins even if
// the primary write never happens.
func (u *update) write(dev Device) error {
	if err := writeCopy(dev, u.secondary, int64(u.hdrSize)); err != nil {
		return fmt.Errorf("write secondary LUKS2 header: %w", err)
	}
	if err := writeCopy(dev, u.primary, 0); err != nil {
		return fmt.Errorf("write primary LUKS2 header: %w", err)
	}
	return nil
}

// writeCopy writes one metadata copy: JSON area, Sync, then the binary
// header, Sync. Every field of the binary header (magic to checksum) lies in
// its first 512-byte sector, which a disk writes atomically, so a crash
// never leaves a signature in front of a half-written copy (which matters
// for Format, where there is no older valid copy to fall back to).
func writeCopy(dev Device, b []byte, off int64) error {
	if _, err := dev.WriteAt(b[binHeaderSize:], off+binHeaderSize); err != nil {
		return err
	}
	if err := dev.Sync(); err != nil {
		return err
	}
	if _, err := dev.WriteAt(b[:binHeaderSize], off); err != nil {
		return err
	}
	return dev.Sync()
}

// commitNext writes m as the generation after h.
func commitNext(dev Device, h *Header, m *metadata) error {
	u, err := prepareNext(h, m)
	if err != nil {
		return err
	}
	return u.write(dev)
}

// wipeArea overwrites a keyslot area with random bytes and syncs.
func wipeArea(dev Device, off, size uint64) error {
	const chunk = 1 << 20
	buf := make([]byte, min(size, chunk))
	for done := uint64(0); done < size; {
		n := min(size-done, chunk)
		if _, err := rand.Read(buf[:n]); err != nil {
			return err
		}
		if _, err := dev.WriteAt(buf[:n], int64(off+done)); err != nil {
			return fmt.Errorf("wipe keyslot area at %d: %w", off+done, err)
		}
		done += n
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("sync wiped keyslot area: %w", err)
	}
	return nil
}
