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

// commit writes m as the next metadata generation (seqid+1) to both copies:
// secondary, Sync, primary, Sync. Until the secondary is on disk the old
// metadata is the only valid one; afterwards the new one has the higher seqid
// and wins even if the primary write never happens.
func commit(dev Device, hdrSize, seqid uint64, uuid, label, subsystem string, m *metadata) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("refusing to write invalid metadata: %w", err)
	}
	text, err := m.encode()
	if err != nil {
		return err
	}
	copies := make([][]byte, 2)
	for i, off := range []int64{int64(hdrSize), 0} {
		salt := make([]byte, lenSalt)
		if _, err := rand.Read(salt); err != nil {
			return err
		}
		if copies[i], err = encodeCopy(off, hdrSize, seqid, label, uuid, subsystem, text, salt); err != nil {
			return err
		}
	}
	if _, err := dev.WriteAt(copies[0], int64(hdrSize)); err != nil {
		return fmt.Errorf("write secondary LUKS2 header: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("sync secondary LUKS2 header: %w", err)
	}
	if _, err := dev.WriteAt(copies[1], 0); err != nil {
		return fmt.Errorf("write primary LUKS2 header: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("sync primary LUKS2 header: %w", err)
	}
	return nil
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
