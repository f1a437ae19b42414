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

// commit writes m as the next metadata generation (seqid+1) to both copies,
// secondary first, then primary (see the package doc). Until the secondary
// is on disk the old metadata is the only valid one; afterwards the new one
// has the higher seqid and wins even if the primary write never happens.
func commit(dev Device, hdrSize, seqid uint64, uuid, label, subsystem string, m *metadata) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("refusing to write invalid metadata: %w", err)
	}
	text, err := m.encode()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		name string
		off  int64
	}{{"secondary", int64(hdrSize)}, {"primary", 0}} {
		salt := make([]byte, lenSalt)
		if _, err := rand.Read(salt); err != nil {
			return err
		}
		b, err := encodeCopy(c.off, hdrSize, seqid, label, uuid, subsystem, text, salt)
		if err != nil {
			return err
		}
		if err := writeCopy(dev, b, c.off); err != nil {
			return fmt.Errorf("write %s LUKS2 header: %w", c.name, err)
		}
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
	return commit(dev, h.MetadataSize, h.Seqid+1, h.UUID, h.Label, h.Subsystem, m)
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
