package meta

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Journal records in META which volumes are being formatted
// (TagFormatPending), so that a format interrupted by a crash or power loss
// can be redone on the next boot instead of leaving a partition full of
// half-written key material that the empty rule would refuse forever. It
// implements unlock's FormatJournal.
// Use one *Journal per META partition: it serialises its read-modify-write
// cycles, so volumes formatted concurrently do not lose each other's records.
type Journal struct {
	Dev ReadWriterAt // the META partition
	mu  sync.Mutex
}

func (j *Journal) load() (*Meta, error) {
	m, err := Read(j.Dev)
	if errors.Is(err, ErrBlank) {
		return New(), nil
	}
	return m, err
}

// BeginFormat records that volumeID is about to be formatted.
func (j *Journal) BeginFormat(volumeID string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return fmt.Errorf("record format of %s in META: %w", volumeID, err)
	}
	if !addVolumeID(m, TagFormatPending, volumeID) {
		return nil
	}
	if err := m.Write(j.Dev); err != nil {
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
	if !removeVolumeID(m, TagFormatPending, volumeID) {
		return nil
	}
	if err := m.Write(j.Dev); err != nil {
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
	return slices.Contains(volumeIDs(m, TagFormatPending), volumeID), nil
}
