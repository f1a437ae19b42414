package meta

import (
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

// The journal reads META once for any number of questions, keeps it
// current through its own writes, and reads it again after a write that
// failed (what is on disk is then unknown).
func TestJournalReadsOnce(t *testing.T) {
	d := &countingDev{image: make(image, Size)}
	j := &Journal{Dev: d}
	for _, id := range []string{"STATE", "EPHEMERAL", "u-data"} {
		if pending, err := j.FormatPending(id); err != nil || pending {
			t.Fatalf("FormatPending(%s) = %v, %v on a blank META", id, pending, err)
		}
	}
	if err := j.BeginFormat("EPHEMERAL"); err != nil {
		t.Fatal(err)
	}
	if pending, _ := j.FormatPending("EPHEMERAL"); !pending {
		t.Error("EPHEMERAL not pending after BeginFormat")
	}
	if d.reads != 1 {
		t.Errorf("META read %d times, want 1", d.reads)
	}
	// what the journal wrote is on disk
	if m, err := Read(d.image); err != nil || len(volumeIDs(m, TagFormatJournal)) != 1 {
		t.Fatalf("on disk after BeginFormat: %v, %v", m, err)
	}

	d.failNext = true
	if err := j.EndFormat("EPHEMERAL"); err == nil {
		t.Fatal("EndFormat hid a write error")
	}
	if pending, _ := j.FormatPending("EPHEMERAL"); !pending {
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
	if pending, _ := j2.FormatPending("EPHEMERAL"); !pending || d.reads != 0 {
		t.Errorf("NewJournal: pending %v after %d reads, want true after 0", pending, d.reads)
	}
}
