package unlock

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// clearFailsMeta is META whose writes fail once vol holds a complete
// format (a header with token 0): the journal's record is written, its
// clear is not.
type clearFailsMeta struct {
	memMeta
	vol *os.File
}

func (m clearFailsMeta) WriteAt(p []byte, off int64) (int, error) {
	if h, err := luks2.ReadHeader(m.vol); err == nil {
		if _, ok := h.Tokens[0]; ok {
			return 0, errors.New("injected META write error")
		}
	}
	return m.memMeta.WriteAt(p, off)
}

// TestKMSOutageNeverWipesAFinishedFormat is issue 10's reproduction: a
// KMS-keyed volume is formatted, the journal clear fails so the record
// outlives the format, data is written, and the next boot finds the KMS
// down. The volume must be refused and left byte for byte as it was (the
// old code zeroed its header and tried to format again), and once the KMS
// is back it opens, with its data, and the record goes.
func TestKMSOutageNeverWipesAFinishedFormat(t *testing.T) {
	kms := &fakeKMS{}
	vol := volume(t, "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"+
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n"+fastKDF, "EPHEMERAL")
	f := image(t, imageSize)
	mdev := clearFailsMeta{memMeta: make(memMeta, meta.Size), vol: f}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, Journal: &meta.Journal{Dev: mdev}}
	res, err := e.Unlock(ctx, vol, f, imageSize)
	t.Logf("first boot, clear fails: %v", err) // now an error: the boot stops before mkfs
	res.Zero()
	if m, err := meta.Read(mdev.memMeta); err != nil {
		t.Fatal(err)
	} else if _, ok := m.Get(meta.TagFormatJournal); !ok {
		t.Fatal("setup: the journal record did not outlive the format")
	}
	// the volume is used: data goes past the 16 MiB header area
	data := bytes.Repeat([]byte("precious data "), 4096)
	if _, err := f.WriteAt(data, 16<<20); err != nil {
		t.Fatal(err)
	}
	before := digest(t, f)

	kms.down = true
	var logged bytes.Buffer
	next := &Engine{Env: e.Env, Journal: &meta.Journal{Dev: mdev.memMeta}, Log: logTo(&logged)}
	if _, err := next.Unlock(ctx, vol, f, imageSize); !errors.Is(err, ErrNoKeyOpens) {
		t.Fatalf("KMS down: %v, want a refusal (no key opens)", err)
	}
	if digest(t, f) != before {
		t.Fatalf("KMS down: the volume was written to (log: %s)", logged.String())
	}

	kms.down = false
	r, err := next.Unlock(ctx, vol, f, imageSize)
	if err != nil || r.Formatted || r.Slot != 0 {
		t.Fatalf("KMS back: %v (formatted %v)", err, r != nil && r.Formatted)
	}
	r.Zero()
	got := make([]byte, len(data))
	f.ReadAt(got, 16<<20)
	if !bytes.Equal(got, data) {
		t.Fatal("KMS back: the data is gone")
	}
	if m, _ := meta.Read(mdev.memMeta); m != nil {
		if _, ok := m.Get(meta.TagFormatJournal); ok {
			t.Fatal("KMS back: the record of the finished format is still there")
		}
	}
}

// logTo is an engine log that keeps every line, Info and up.
func logTo(w *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// endFails is a journal whose End fails.
type endFails struct{ *meta.Journal }

func (endFails) End(string) error { return errors.New("injected clear failure") }

// A journal clear that fails is an error, on the format and on the open
// that finds a finished format's record: the boot stops before mkfs.
func TestJournalClearFailureIsAnError(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "a"}), "EPHEMERAL")
	f := image(t, imageSize)
	j := &meta.Journal{Dev: make(memMeta, meta.Size)}
	e := &Engine{Journal: endFails{j}}
	if res, err := e.Unlock(ctx, vol, f, imageSize); err == nil || res != nil {
		t.Fatalf("format: clear failed but Unlock returned %v, %v", res, err)
	}
	if r, _ := j.Record("EPHEMERAL"); r == nil || r.Stage != meta.StageHeader {
		t.Fatalf("record after the format: %+v", r)
	}
	if res, err := e.Unlock(ctx, vol, f, imageSize); err == nil || res != nil {
		t.Fatalf("open: clear failed but Unlock returned %v, %v", res, err)
	}
	e.Journal = j
	res, err := e.Unlock(ctx, vol, f, imageSize)
	if err != nil || res.Formatted || !res.FormatCompleted || res.Wiped != "" {
		t.Fatalf("clear works again: %v %+v", err, res)
	}
	res.Zero()
	if r, _ := j.Record("EPHEMERAL"); r != nil {
		t.Fatalf("record left: %+v", r)
	}
	// A record of another format (another UUID) is removed, but says
	// nothing about this header: no FormatCompleted.
	if err := j.Begin(meta.Record{Volume: "EPHEMERAL", UUID: "00000000-0000-4000-8000-000000000000", Slot: 0}); err != nil {
		t.Fatal(err)
	}
	res, err = e.Unlock(ctx, vol, f, imageSize)
	if err != nil || res.Formatted || res.FormatCompleted {
		t.Fatalf("record of another UUID: %v %+v", err, res)
	}
	res.Zero()
	// Without a record, an open is just an open.
	res, err = e.Unlock(ctx, vol, f, imageSize)
	if err != nil || res.FormatCompleted {
		t.Fatalf("no record: %v %+v", err, res)
	}
	res.Zero()
}

// A redo logs one line naming the volume, the reason and what was erased,
// and the result carries it; the bytes outside what it names are kept.
func TestRedoLogsTheWipe(t *testing.T) {
	kms := &fakeKMS{}
	vol := volume(t, "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"+
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n"+fastKDF, "EPHEMERAL")
	f := image(t, imageSize)
	j := &meta.Journal{Dev: make(memMeta, meta.Size)}
	var logged bytes.Buffer
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, Journal: j, Log: logTo(&logged)}
	res, err := e.Unlock(ctx, vol, f, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	res.Zero()
	// the format was cut short after its header: the token is gone and
	// the record says "header"
	if err := luks2.RemoveToken(f, 0); err != nil {
		t.Fatal(err)
	}
	if err := j.Begin(meta.Record{Volume: "EPHEMERAL", UUID: res.UUID, Slot: 0, Token: true}); err != nil {
		t.Fatal(err)
	}
	if err := j.Advance("EPHEMERAL", meta.StageHeader); err != nil {
		t.Fatal(err)
	}
	mid := bytes.Repeat([]byte{0xA5}, 4096)
	f.WriteAt(mid, 17<<20) // data area, before the last MiB
	logged.Reset()
	res, err = e.Unlock(ctx, vol, f, imageSize)
	if err != nil || !res.Formatted {
		t.Fatalf("redo: %v", err)
	}
	res.Zero()
	lines := bytes.Count(logged.Bytes(), []byte("redoing an interrupted format"))
	if lines != 1 || !bytes.Contains(logged.Bytes(), []byte("volume=EPHEMERAL")) ||
		!bytes.Contains(logged.Bytes(), []byte("bytes 0-4198400")) || !bytes.Contains(logged.Bytes(), []byte("last MiB")) {
		t.Fatalf("wipe log (%d lines):\n%s", lines, logged.String())
	}
	if res.Wiped == "" || !bytes.Contains(logged.Bytes(), []byte(res.UUID)) {
		t.Fatalf("Result.Wiped %q", res.Wiped)
	}
	got := make([]byte, len(mid))
	f.ReadAt(got, 17<<20)
	if !bytes.Equal(got, mid) {
		t.Fatal("the wipe erased more than it says")
	}
}

// A value in the journal's tag that is not ours refuses any redo and any
// format (nothing is written to the volume or META); a key that opens
// still opens.
func TestForeignJournalRefusesRedo(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "a"}), "EPHEMERAL")
	m := meta.New()
	m.Set(meta.TagFormatJournal, []byte("EPHEMERAL"))
	mdev := make(memMeta, meta.Size)
	if err := m.Write(mdev); err != nil {
		t.Fatal(err)
	}
	metaBefore := bytes.Clone(mdev)
	e := &Engine{Journal: &meta.Journal{Dev: mdev}}

	empty := image(t, imageSize)
	if _, err := e.Unlock(ctx, vol, empty, imageSize); !errors.Is(err, meta.ErrJournalUnreadable) {
		t.Fatalf("empty partition: %v", err)
	}
	if d := digest(t, empty); d != digest(t, image(t, imageSize)) {
		t.Fatal("empty partition written")
	}

	f := image(t, imageSize)
	res, err := (&Engine{}).Unlock(ctx, vol, f, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	res.Zero()
	if r, err := e.Unlock(ctx, vol, f, imageSize); err != nil {
		t.Fatalf("a key that opens: %v", err)
	} else {
		r.Zero()
	}
	for _, off := range []int64{4096, 16384 + 4096} {
		f.WriteAt([]byte("{torn"), off) // both header copies damaged
	}
	before := digest(t, f)
	if _, err := e.Unlock(ctx, vol, f, imageSize); err == nil || !errors.Is(err, luks2.ErrNoValidHeader) {
		t.Fatalf("torn header: %v", err)
	}
	if digest(t, f) != before || !bytes.Equal(mdev, metaBefore) {
		t.Fatal("written to")
	}
}
