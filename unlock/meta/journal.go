package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Stages a format goes through, in order. A record is removed (End) once
// the format is complete.
const (
	// StageBegun: the record is written; nothing of this format need be
	// on the volume yet (at most its keyslot area or a torn header).
	StageBegun = "begun"
	// StageHeader: the LUKS2 header with the first keyslot is on disk.
	StageHeader = "header"
	// StageToken: the first key's token (id == its slot) is on disk.
	StageToken = "token"
)

// journalVersion is the version of the document in TagFormatJournal.
const journalVersion = 1

// ErrJournalUnreadable: TagFormatJournal holds a value that is not a
// format journal this code wrote; nothing may be redone on its word.
var ErrJournalUnreadable = errors.New("format journal in META is not one cryptinit wrote")

// Record is one format in progress.
type Record struct {
	Volume string `json:"volume"`
	// UUID is the LUKS2 UUID the format writes, chosen before it starts.
	UUID string `json:"uuid"`
	// Slot is the keyslot of the key the format writes first; Token says
	// whether that key needs its token (id == Slot) to open.
	Slot  int    `json:"slot"`
	Token bool   `json:"token"`
	Stage string `json:"stage"`
}

type journalDoc struct {
	Version int      `json:"version"`
	Formats []Record `json:"formats"`
}

// Journal records in META which volumes are being formatted, with the
// LUKS2 UUID each format writes and the stage it reached
// (TagFormatJournal), so that the engine can tell its own interrupted
// format from a finished volume. It implements unlock's FormatJournal.
// It reads and writes TagFormatJournal only.
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

// decode parses TagFormatJournal; an unset tag is an empty journal.
func decode(m *Meta) (*journalDoc, error) {
	v, ok := m.Get(TagFormatJournal)
	if !ok {
		return &journalDoc{Version: journalVersion}, nil
	}
	var d journalDoc
	if err := json.Unmarshal(v, &d); err != nil {
		return nil, fmt.Errorf("%w (tag 0x%X: %v)", ErrJournalUnreadable, TagFormatJournal, err)
	}
	if d.Version != journalVersion {
		return nil, fmt.Errorf("%w (tag 0x%X: version %d, want %d)", ErrJournalUnreadable, TagFormatJournal, d.Version, journalVersion)
	}
	for _, r := range d.Formats {
		if r.Volume == "" || r.UUID == "" || !validStage(r.Stage) {
			return nil, fmt.Errorf("%w (tag 0x%X: bad record %+v)", ErrJournalUnreadable, TagFormatJournal, r)
		}
	}
	return &d, nil
}

func validStage(s string) bool { return s == StageBegun || s == StageHeader || s == StageToken }

// update applies change to the journal and writes META when it changed.
func (j *Journal) update(what, volumeID string, change func(d *journalDoc) (bool, error)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return fmt.Errorf("%s %s in META: %w", what, volumeID, err)
	}
	d, err := decode(m)
	if err != nil {
		return fmt.Errorf("%s %s in META: %w", what, volumeID, err)
	}
	changed, err := change(d)
	if err != nil || !changed {
		return err
	}
	if len(d.Formats) == 0 {
		m.Delete(TagFormatJournal)
	} else {
		v, err := json.Marshal(d)
		if err != nil {
			return err
		}
		m.Set(TagFormatJournal, v)
	}
	if err := j.write(m); err != nil {
		return fmt.Errorf("%s %s in META: %w", what, volumeID, err)
	}
	return nil
}

// Begin records that r.Volume is about to be formatted with r.UUID,
// replacing any earlier record of that volume; the stage is StageBegun.
func (j *Journal) Begin(r Record) error {
	r.Stage = StageBegun
	if r.Volume == "" || r.UUID == "" {
		return fmt.Errorf("record format: volume %q UUID %q: both are needed", r.Volume, r.UUID)
	}
	return j.update("record the format of", r.Volume, func(d *journalDoc) (bool, error) {
		d.Formats = slices.DeleteFunc(d.Formats, func(o Record) bool { return o.Volume == r.Volume })
		d.Formats = append(d.Formats, r)
		return true, nil
	})
}

// Advance records that volumeID's format reached stage.
func (j *Journal) Advance(volumeID, stage string) error {
	if !validStage(stage) {
		return fmt.Errorf("advance format of %s: unknown stage %q", volumeID, stage)
	}
	return j.update("advance the format of", volumeID, func(d *journalDoc) (bool, error) {
		i := slices.IndexFunc(d.Formats, func(o Record) bool { return o.Volume == volumeID })
		if i < 0 {
			return false, fmt.Errorf("advance format of %s to %s: no record", volumeID, stage)
		}
		d.Formats[i].Stage = stage
		return true, nil
	})
}

// End removes volumeID's record: its format is complete.
func (j *Journal) End(volumeID string) error {
	return j.update("clear the format record of", volumeID, func(d *journalDoc) (bool, error) {
		n := len(d.Formats)
		d.Formats = slices.DeleteFunc(d.Formats, func(o Record) bool { return o.Volume == volumeID })
		return len(d.Formats) != n, nil
	})
}

// Record returns volumeID's record, nil when there is none. A journal
// that does not parse is an error wrapping ErrJournalUnreadable.
func (j *Journal) Record(volumeID string) (*Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	m, err := j.load()
	if err != nil {
		return nil, fmt.Errorf("read the format journal in META: %w", err)
	}
	d, err := decode(m)
	if err != nil {
		return nil, err
	}
	for _, r := range d.Formats {
		if r.Volume == volumeID {
			return &r, nil
		}
	}
	return nil, nil
}
