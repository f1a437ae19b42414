package meta

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// crashDev records the writes and syncs of META.Write, for replaying a
// crash after any of them.
type crashDev struct {
	ops []crashOp
}

type crashOp struct {
	sync bool
	off  int64
	data []byte
}

func (d *crashDev) WriteAt(p []byte, off int64) (int, error) {
	d.ops = append(d.ops, crashOp{off: off, data: slices.Clone(p)})
	return len(p), nil
}

func (d *crashDev) Sync() error {
	d.ops = append(d.ops, crashOp{sync: true})
	return nil
}

func (o crashOp) String() string {
	if o.sync {
		return "sync"
	}
	return fmt.Sprintf("write copy %d", o.off/CopySize+1)
}

// A write not yet synced when the power goes may be lost, done, or torn
// (its first half on disk, the rest old).
type fate int

const (
	lost fate = iota
	done
	torn
)

// crashImages returns every image a crash right after ops[:k] can leave on
// a device that held old: synced writes are on it, each unsynced one met
// any fate.
func crashImages(old image, ops []crashOp) []image {
	durable := slices.Clone(old)
	var pending []crashOp
	for _, o := range ops {
		if o.sync {
			for _, w := range pending {
				copy(durable[w.off:], w.data)
			}
			pending = nil
			continue
		}
		pending = append(pending, o)
	}
	var out []image
	n := 1
	for range pending {
		n *= 3
	}
	for c := 0; c < n; c++ {
		img := slices.Clone(durable)
		for i, x := 0, c; i < len(pending); i, x = i+1, x/3 {
			w := pending[i]
			switch fate(x % 3) {
			case done:
				copy(img[w.off:], w.data)
			case torn:
				copy(img[w.off:], w.data[:len(w.data)/2])
			}
		}
		out = append(out, img)
	}
	return out
}

// TestWriteCrashOrdering: Write syncs copy 1 before it writes copy 2, so a
// crash after any step, with the unsynced write lost, done or torn, leaves
// a META that reads as either the old or the new content. Writing both
// copies before one sync (as Write did) can tear both.
func TestWriteCrashOrdering(t *testing.T) {
	oldM := New()
	oldM.Set(TagStateEncryptionConfig, []byte("old tag 9"))
	oldM.Set(TagUserReserved1, []byte("user data"))
	old := written(t, oldM)
	newM := New()
	newM.Set(TagStateEncryptionConfig, []byte("new tag 9, longer than the old one"))
	newM.Set(TagUserReserved1, []byte("user data"))

	d := &crashDev{}
	if err := newM.Write(d); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, o := range d.ops {
		order = append(order, o.String())
	}
	if got, want := strings.Join(order, ", "), "write copy 1, sync, write copy 2, sync"; got != want {
		t.Errorf("Write did %q, want %q", got, want)
	}
	cases := 0
	for k := 0; k <= len(d.ops); k++ {
		for i, img := range crashImages(old, d.ops[:k]) {
			cases++
			m, err := Read(img)
			if err != nil {
				t.Errorf("crash after %v (outcome %d): META unreadable: %v", d.ops[:k], i, err)
				continue
			}
			v, _ := m.Get(TagStateEncryptionConfig)
			if s := string(v); s != "old tag 9" && s != "new tag 9, longer than the old one" {
				t.Errorf("crash after %v (outcome %d): tag 9 = %q, neither old nor new", d.ops[:k], i, s)
			}
			if u, _ := m.Get(TagUserReserved1); string(u) != "user data" {
				t.Errorf("crash after %v (outcome %d): tag 12 = %q", d.ops[:k], i, u)
			}
		}
	}
	t.Logf("%d crash outcomes checked", cases)
}

// A writer without Sync gets both copies, copy 1 first.
func TestWriteWithoutSync(t *testing.T) {
	var offs []int64
	w := writerFunc(func(p []byte, off int64) (int, error) {
		offs = append(offs, off)
		return len(p), nil
	})
	if err := New().Write(w); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(offs, []int64{0, CopySize}) {
		t.Fatalf("writes at %v", offs)
	}
}

type writerFunc func(p []byte, off int64) (int, error)

func (f writerFunc) WriteAt(p []byte, off int64) (int, error) { return f(p, off) }
