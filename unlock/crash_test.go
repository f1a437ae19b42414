package unlock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

var errCrash = errors.New("injected crash")

// crashDev lets `left` writes through, tears the next one (half of it
// reaches the disk) and fails every write and sync after it: power lost.
type crashDev struct {
	f       *os.File
	left    int
	crashed bool
}

func (c *crashDev) ReadAt(p []byte, off int64) (int, error) { return c.f.ReadAt(p, off) }

func (c *crashDev) WriteAt(p []byte, off int64) (int, error) {
	if c.crashed {
		return 0, errCrash
	}
	if c.left == 0 {
		c.crashed = true
		n, _ := c.f.WriteAt(p[:len(p)/2], off)
		return n, errCrash
	}
	c.left--
	return c.f.WriteAt(p, off)
}

func (c *crashDev) Sync() error {
	if c.crashed {
		return errCrash
	}
	return nil
}

// TestSyncCrashSafety crashes the sync after every write it makes and checks
// that a configured key still opens the volume, and that the next boot
// finishes the sync.
func TestSyncCrashSafety(t *testing.T) {
	kms := &fakeKMS{}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}}
	cfgA := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, static: {passphrase: a}}\n" +
		"    - {slot: 1, static: {passphrase: b}}\n" +
		"    - {slot: 2, static: {passphrase: c}}\n" +
		"    - {slot: 4, kms: {endpoint: grpc://kms:1}}\n" + fastKDF
	// B: slot 0 changes (replace), 1 opens, 2 goes (remove), 3 and 6 are new
	// (add; 6 writes a token first), 4 stays
	cfgB := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, static: {passphrase: a2}}\n" +
		"    - {slot: 1, static: {passphrase: b}}\n" +
		"    - {slot: 3, static: {passphrase: d}}\n" +
		"    - {slot: 4, kms: {endpoint: grpc://kms:1}}\n" +
		"    - {slot: 6, kms: {endpoint: grpc://kms:1}}\n" + fastKDF
	volA, volB := volume(t, cfgA, "EPHEMERAL"), volume(t, cfgB, "EPHEMERAL")

	base := image(t, imageSize)
	if _, err := e.Unlock(ctx, volA, base, imageSize); err != nil {
		t.Fatal(err)
	}
	baseBytes, err := os.ReadFile(base.Name())
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	for n := 0; ; n++ {
		path := filepath.Join(dir, "crash.img")
		if err := os.WriteFile(path, baseBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		dev := &crashDev{f: f, left: n}
		res, err := e.Unlock(ctx, volB, dev, imageSize)
		if err != nil {
			t.Fatalf("crash after %d writes: open failed before any write: %v", n, err)
		}
		res.Zero()
		if !dev.crashed {
			if len(res.Sync.Problems) > 0 || len(res.Sync.Removed) != 1 {
				t.Fatalf("uncrashed run: %v", res.Sync)
			}
			t.Logf("sync makes %d writes; crashed after each of them", n)
			if n < 10 {
				t.Fatalf("only %d writes: the test did not exercise the sync", n)
			}
			f.Close()
			break
		}
		if len(res.Sync.Problems) == 0 && (len(res.Sync.Removed) != 1 || len(res.Sync.Added) != 2 || len(res.Sync.Replaced) != 1) {
			// only the last write, the sync fingerprint, may fail silently
			t.Fatalf("crash after %d writes not reported: %v", n, res.Sync)
		}
		// after the crash: the key that opened still opens, through a
		// fresh read of whatever is on disk
		if !opens(t, f, "b", 1) {
			t.Fatalf("crash after %d writes: the opening key (slot 1) no longer opens", n)
		}
		if r, err := e.Open(ctx, volB, f); err != nil {
			t.Fatalf("crash after %d writes: no configured key opens: %v", n, err)
		} else {
			r.Zero()
		}
		// the next boot completes the sync
		r, err := e.Unlock(ctx, volB, f, imageSize)
		if err != nil || len(r.Sync.Problems) > 0 {
			t.Fatalf("crash after %d writes: next boot: %v %v", n, err, r.Sync)
		}
		r.Zero()
		for slot, pass := range map[int]string{0: "a2", 1: "b", 3: "d"} {
			if !opens(t, f, pass, slot) {
				t.Fatalf("crash after %d writes: after the next boot slot %d does not open", n, slot)
			}
		}
		if got := slotsOf(t, f); len(got) != 5 || got[2] != 3 {
			t.Fatalf("crash after %d writes: slots after next boot %v", n, got)
		}
		// slot 0 opens with a2, so "a" is gone; "c" lived in slot 2, now gone
		f.Close()
	}
}

// fastKDF keeps the many KDF runs of the crash test cheap: the test is
// about write order, not KDF strength.
const fastKDF = "  kdf: {type: pbkdf2, iterations: 1000}\n"

// memMeta is an in-memory META partition.
type memMeta []byte

func (m memMeta) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memMeta) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// TestFormatCrashResumes crashes the first-boot format after each of its
// writes: with the META journal the next boot formats again (or opens what
// was completed); without it the half-written partition is refused, never
// formatted blindly.
func TestFormatCrashResumes(t *testing.T) {
	kms := &fakeKMS{}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n" +
		"    - {slot: 1, static: {passphrase: b}}\n" + fastKDF
	vol := volume(t, y, "EPHEMERAL")
	dir := t.TempDir()
	for n := 0; ; n++ {
		path := filepath.Join(dir, "fmt.img")
		os.Remove(path)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(imageSize)
		journal := &meta.Journal{Dev: make(memMeta, meta.Size)}
		e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, Journal: journal}
		dev := &crashDev{f: f, left: n}
		res, err := e.Unlock(ctx, vol, dev, imageSize)
		if !dev.crashed {
			if err != nil || !res.Formatted {
				t.Fatalf("uncrashed format: %v", err)
			}
			if r, err := journal.Record("EPHEMERAL"); r != nil || err != nil {
				t.Fatal("journal not cleared after a finished format")
			}
			t.Logf("format + sync make %d writes; crashed after each of them", n)
			f.Close()
			break
		}
		// next boot, same META
		next, err := e.Unlock(ctx, vol, f, imageSize)
		if err != nil {
			t.Fatalf("crash after %d writes: next boot: %v", n, err)
		}
		next.Zero()
		if !opens(t, f, "b", 1) {
			t.Fatalf("crash after %d writes: slot 1 does not open after the next boot", n)
		}
		if r, err := e.Open(ctx, vol, f); err != nil || r.Slot != 0 {
			t.Fatalf("crash after %d writes: kms slot 0 does not open after the next boot: %v", n, err)
		}
		if r, err := journal.Record("EPHEMERAL"); r != nil || err != nil {
			t.Fatalf("crash after %d writes: journal left pending", n)
		}
		f.Close()
	}
}

func TestFormatCrashWithoutJournalIsRefused(t *testing.T) {
	f := image(t, imageSize)
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "a"}), "EPHEMERAL")
	dev := &crashDev{f: f, left: 1} // the keyslot area is written, no header
	if _, err := (&Engine{}).Unlock(ctx, vol, dev, imageSize); err == nil {
		t.Fatal("crash not reported")
	}
	_, err := (&Engine{}).Unlock(ctx, vol, f, imageSize)
	if !errors.Is(err, probe.ErrNotEmpty) {
		t.Fatalf("half-formatted partition without journal: %v", err)
	}
}
