package meta

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Journal records in META which volumes are being formatted
// (TagFormatJournal), so that a format interrupted by a crash or power loss
// can be redone on the next boot instead of leaving a partition full of
// half-written key material that the empty rule would refuse forever. It
// implements unlock's FormatJournal.
// Use one *Journal per META partition: it serialises its read-modify-write
// cycles, so volumes formatted concurrently do not lose each other's records.
// It reads META once and keeps it current through its own writes (the boot
// asks it about every volume it opens; each read is 256 KiB and a checksum),
// so nothing else may write META while a Journal is in use.
type Journal struct {
	Dev ReadWriterAt // the META partition
	mu  sync.Mutex
	m   *Meta // META as on disk, once read or written
}

// NewJournal is a Journal on dev that starts from m, META as the caller
// last read or wrote it (nil: read it on first use).
func NewJournal(dev ReadWriterAt, m *Meta) *Journal {
	return &Journal{Dev: dev, m: m}
}

func (j *Journal) load() (*Meta, error) {
	if j.m != nil {
		return j.m, nil
	}
	m, err := Read(j.Dev)
	if errors.Is(err, ErrBlank) {
		m, err = New(), nil
	}
	if err != nil {
		return nil, err
	}
	j.m = m
	return m, nil
}

// write writes m, the Journal's META after a change; when that fails what
// is on disk is unknown, so the next call reads it again.
func (j *Journal) write(m *Meta) error {
	if err := m.Write(j.Dev); err != nil {
		j.m = nil
		return err
	}
	return nil
}

// BeginFormat records that volumeID is about to be formatted.
func (j *Journal) BeginFormat(volumeID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return fmt.Errorf("record format of %s in META: %w", volumeID, err)
	}
	if !addVolumeID(m, TagFormatJournal, volumeID) {
		return nil
	}
	if err := j.write(m); err != nil {
		return fmt.Errorf("record format of %s in META: %w", volumeID, err)
	}
	return nil
}

// EndFormat clears volumeID's record.
func (j *Journal) EndFormat(volumeID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return fmt.Errorf("clear format record of %s in META: %w", volumeID, err)
	}
	if !removeVolumeID(m, TagFormatJournal, volumeID) {
		return nil
	}
	if err := j.write(m); err != nil {
		return fmt.Errorf("clear format record of %s in META: %w", volumeID, err)
	}
	return nil
}

// FormatPending reports whether a format of volumeID was started and not
// finished.
func (j *Journal) FormatPending(volumeID string) (bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return false, err
	}
	return slices.Contains(volumeIDs(m, TagFormatJournal), volumeID), nil
}
