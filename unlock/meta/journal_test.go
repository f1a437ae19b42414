package meta

import (
	"bytes"
	"errors"
	"testing"
)

// countingDev is an image that counts reads of the first copy and can fail
// its writes.
type countingDev struct {
	image
	reads    int
	failNext bool
}

func (d *countingDev) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		d.reads++
	}
	return d.image.ReadAt(p, off)
}

func (d *countingDev) WriteAt(p []byte, off int64) (int, error) {
	if d.failNext {
		d.failNext = false
		return 0, errors.New("injected write error")
	}
	return d.image.WriteAt(p, off)
}

const (
	uuidA = "0b6d2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"
	uuidB = "1c7e3b45-8e3f-4d20-8b66-4f1a7e32cab8"
)

// The journal reads META once for any number of questions, keeps it
// current through its own writes, and reads it again after a write that
// failed (what is on disk is then unknown).
func TestJournalReadsOnce(t *testing.T) {
	d := &countingDev{image: make(image, Size)}
	j := &Journal{Dev: d}
	for _, id := range []string{"STATE", "EPHEMERAL", "u-data"} {
		if r, err := j.Record(id); err != nil || r != nil {
			t.Fatalf("Record(%s) = %v, %v on a blank META", id, r, err)
		}
	}
	if err := j.Begin(Record{Volume: "EPHEMERAL", UUID: uuidA}); err != nil {
		t.Fatal(err)
	}
	if r, _ := j.Record("EPHEMERAL"); r == nil {
		t.Error("EPHEMERAL has no record after Begin")
	}
	if d.reads != 1 {
		t.Errorf("META read %d times, want 1", d.reads)
	}
	// what the journal wrote is on disk
	if r, err := (&Journal{Dev: d.image}).Record("EPHEMERAL"); err != nil || r == nil || r.UUID != uuidA {
		t.Fatalf("on disk after Begin: %+v, %v", r, err)
	}

	d.failNext = true
	if err := j.End("EPHEMERAL"); err == nil {
		t.Fatal("End hid a write error")
	}
	if r, _ := j.Record("EPHEMERAL"); r == nil {
		t.Error("after a failed write the journal believes its own change, not the disk")
	}
	if d.reads != 2 {
		t.Errorf("META read %d times after a failed write, want 2 (read again)", d.reads)
	}

	// NewJournal starts from META the caller has read: no read at all.
	m, err := Read(d.image)
	if err != nil {
		t.Fatal(err)
	}
	d.reads = 0
	j2 := NewJournal(d, m)
	if r, _ := j2.Record("EPHEMERAL"); r == nil || d.reads != 0 {
		t.Errorf("NewJournal: record %v after %d reads, want one after 0", r, d.reads)
	}
}

// Records carry the UUID and the stage; Begin replaces a volume's record,
// End removes it, and the tag goes when the last record does.
func TestJournalRecords(t *testing.T) {
	j := &Journal{Dev: make(image, Size)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(j.Begin(Record{Volume: "EPHEMERAL", UUID: uuidA, Slot: 2, Token: true, Stage: StageToken}))
	must(j.Begin(Record{Volume: "u-data", UUID: uuidB}))
	must(j.Advance("EPHEMERAL", StageHeader))
	r, err := j.Record("EPHEMERAL")
	if err != nil || *r != (Record{Volume: "EPHEMERAL", UUID: uuidA, Slot: 2, Token: true, Stage: StageHeader}) {
		t.Fatalf("EPHEMERAL: %+v, %v", r, err)
	}
	must(j.Begin(Record{Volume: "EPHEMERAL", UUID: uuidB, Slot: 0}))
	if r, _ := j.Record("EPHEMERAL"); r.UUID != uuidB || r.Stage != StageBegun || r.Token {
		t.Fatalf("Begin did not replace the record: %+v", r)
	}
	if err := j.Advance("STATE", StageHeader); err == nil {
		t.Error("Advance of a volume without a record succeeded")
	}
	if err := j.Advance("EPHEMERAL", "done"); err == nil {
		t.Error("Advance to an unknown stage succeeded")
	}
	must(j.End("EPHEMERAL"))
	must(j.End("EPHEMERAL")) // nothing to do
	if r, _ := j.Record("u-data"); r == nil || r.UUID != uuidB {
		t.Fatal("other volume's record lost")
	}
	must(j.End("u-data"))
	m, _ := Read(j.Dev)
	if _, ok := m.Get(TagFormatJournal); ok {
		t.Fatal("empty journal left in META")
	}
}

// A value in TagFormatJournal that is not our document (garbage, the old
// bare list of IDs, another version) is an error for every call, and no
// call rewrites it; other tags are never touched.
func TestJournalForeignValue(t *testing.T) {
	for _, v := range []string{"EPHEMERAL", "EPHEMERAL\nu-data", "{}", `{"version":2,"formats":[]}`,
		`{"version":1,"formats":[{"volume":"EPHEMERAL","uuid":"x","stage":"done"}]}`, "\x00\xff"} {
		m := New()
		m.Set(TagFormatJournal, []byte(v))
		m.Set(TagUserReserved2, []byte("EPHEMERAL"))
		dev := make(image, Size)
		if err := m.Write(dev); err != nil {
			t.Fatal(err)
		}
		before := bytes.Clone(dev)
		j := &Journal{Dev: dev}
		if _, err := j.Record("EPHEMERAL"); !errors.Is(err, ErrJournalUnreadable) {
			t.Errorf("%q: Record: %v", v, err)
		}
		if err := j.Begin(Record{Volume: "EPHEMERAL", UUID: uuidA}); !errors.Is(err, ErrJournalUnreadable) {
			t.Errorf("%q: Begin: %v", v, err)
		}
		if err := j.End("EPHEMERAL"); !errors.Is(err, ErrJournalUnreadable) {
			t.Errorf("%q: End: %v", v, err)
		}
		if !bytes.Equal(dev, before) {
			t.Errorf("%q: META written", v)
		}
	}
}

// The journal leaves every other tag byte for byte as it found it.
func TestJournalKeepsOtherTags(t *testing.T) {
	m := New()
	m.Set(TagUserReserved2, []byte("EPHEMERAL"))
	m.Set(TagStateEncryptionConfig, []byte("cfg"))
	dev := make(image, Size)
	m.Write(dev)
	j := &Journal{Dev: dev}
	j.Begin(Record{Volume: "EPHEMERAL", UUID: uuidA})
	j.End("EPHEMERAL")
	got, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []uint32{TagUserReserved2, TagStateEncryptionConfig} {
		a, _ := m.Get(tag)
		b, _ := got.Get(tag)
		if !bytes.Equal(a, b) {
			t.Errorf("tag %d: %q, was %q", tag, b, a)
		}
	}
	if tags := got.Tags(); len(tags) != 2 {
		t.Errorf("tags after Begin+End: %v", tags)
	}
}
