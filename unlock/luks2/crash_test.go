package luks2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

var errCrash = errors.New("injected crash")

// crashDev lets the first budget WriteAt/Sync calls through and fails every
// later one, as if the process died there. With torn set, the first failing
// WriteAt still writes a prefix of its data (a torn write).
type crashDev struct {
	f       *os.File
	budget  int // < 0: unlimited
	ops     int
	torn    bool
	crashed bool
}

func (d *crashDev) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

func (d *crashDev) WriteAt(p []byte, off int64) (int, error) {
	if d.budget >= 0 && d.ops >= d.budget {
		if d.torn && !d.crashed {
			// A sector-granular tear: only the first 4 KiB (for a header
			// copy, the new binary header over the old JSON area).
			d.f.WriteAt(p[:min(len(p)/2, 4096)], off)
		}
		d.crashed = true
		return 0, errCrash
	}
	d.ops++
	return d.f.WriteAt(p, off)
}

func (d *crashDev) Sync() error {
	if d.budget >= 0 && d.ops >= d.budget {
		d.crashed = true
		return errCrash
	}
	d.ops++
	return nil // a barrier in the model; a real fsync would only slow the test
}

// volState is an acceptable state of the image after a crash.
type volState struct {
	name    string
	notLUKS bool
	keys    map[int][]byte // slot -> passphrase that must open it
	tokens  []int
}

// checkState finds which acceptable state the image is in and proves it:
// the keyslot and token sets match, every key opens its slot (and any-slot)
// with the expected volume key with our reader and, if asked, with
// cryptsetup. It fails the test when no acceptable state matches.
func checkState(t *testing.T, img string, vk []byte, states []volState, withCryptsetup bool) string {
	t.Helper()
	f := openRO(t, img)
	h, err := ReadHeader(f)
	if err != nil {
		for _, s := range states {
			if s.notLUKS && errors.Is(err, ErrNotLUKS) {
				return s.name
			}
		}
		t.Fatalf("image unreadable after crash: %v", err)
	}
	for _, s := range states {
		if s.notLUKS || !slices.Equal(idsOf(h.Keyslots), idsOf(s.keys)) || !slices.Equal(idsOf(h.Tokens), s.tokens) {
			continue
		}
		// Several states may share the slot and token sets (a re-keyed
		// slot): the state is the one whose keys all open.
		opensAll := true
		for slot, pass := range s.keys {
			for _, try := range []int{slot, AnySlot} {
				key, used, err := h.Unlock(f, pass, try)
				if err != nil || used != slot || (vk != nil && !bytes.Equal(key, vk)) {
					opensAll = false
				}
			}
		}
		if !opensAll {
			continue
		}
		if withCryptsetup {
			cs := csMetadata(t, img)
			if got := csIDs(cs["keyslots"]); !slices.Equal(got, idsOf(s.keys)) {
				t.Fatalf("state %s: cryptsetup sees keyslots %v", s.name, got)
			}
			if got := csIDs(cs["tokens"]); !slices.Equal(got, s.tokens) {
				t.Fatalf("state %s: cryptsetup sees tokens %v", s.name, got)
			}
			for slot, pass := range s.keys {
				if err := luks2test.CheckKey(t, img, pass, slot); err != nil {
					t.Fatalf("state %s: cryptsetup: %v", s.name, err)
				}
			}
		}
		return s.name
	}
	t.Fatalf("keyslots %v tokens %v (seqid %d, fromSecondary %v) match no acceptable state", idsOf(h.Keyslots), idsOf(h.Tokens), h.Seqid, h.FromSecondary)
	return ""
}

func TestCrashInjection(t *testing.T) {
	haveCS := luks2test.WantCryptsetup(t)
	p0, p1 := []byte("pass zero"), []byte("pass one")
	vk := bytes.Repeat([]byte{0x5c}, 32)
	tok := []byte(`{"type":"talos-tpm2","keyslots":["0"],"UserData":{"pcrs":[7]}}`)

	blank := luks2test.NewImage(t, imageSize)
	one := luks2test.NewImage(t, imageSize)
	if _, err := Format(openRW(t, one), imageSize, p0, FormatOptions{KDF: kdfPBKDF2, KeySize: 256, VolumeKey: vk, DigestIterations: 1000}); err != nil {
		t.Fatal(err)
	}
	two := luks2test.NewImage(t, imageSize)
	copyFile(t, one, two)
	if _, err := AddKeyslot(openRW(t, two), vk, p1, 1, kdfPBKDF2); err != nil {
		t.Fatal(err)
	}
	s0 := volState{name: "before", keys: map[int][]byte{0: p0}}
	s01 := volState{name: "after", keys: map[int][]byte{0: p0, 1: p1}}
	scenarios := []struct {
		name   string
		start  string
		op     func(d Device) error
		states []volState
	}{
		{"format", blank, func(d Device) error {
			_, err := Format(d, imageSize, p0, FormatOptions{KDF: kdfPBKDF2, KeySize: 256, VolumeKey: vk, DigestIterations: 1000})
			return err
		}, []volState{{name: "before", notLUKS: true}, {name: "after", keys: map[int][]byte{0: p0}}}},
		{"add-key", one, func(d Device) error { _, err := AddKeyslot(d, vk, p1, 1, kdfPBKDF2); return err }, []volState{s0, s01}},
		{"remove-key", two, func(d Device) error { return KillKeyslot(d, 1) }, []volState{named(s01, "before"), named(s0, "after")}},
		{"token-import", one, func(d Device) error { _, err := ImportToken(d, 0, tok, false); return err },
			[]volState{s0, {name: "after", keys: s0.keys, tokens: []int{0}}}},
		{"token-remove", one, nil, nil}, // filled below
	}
	withTok := luks2test.NewImage(t, imageSize)
	copyFile(t, one, withTok)
	if _, err := ImportToken(openRW(t, withTok), 0, tok, false); err != nil {
		t.Fatal(err)
	}
	scenarios[4] = struct {
		name   string
		start  string
		op     func(d Device) error
		states []volState
	}{"token-remove", withTok, func(d Device) error { return RemoveToken(d, 0) },
		[]volState{{name: "before", keys: s0.keys, tokens: []int{0}}, named(s0, "after")}}

	scenarios = append(scenarios, struct {
		name   string
		start  string
		op     func(d Device) error
		states []volState
	}{"replace-key", one, func(d Device) error { return ReplaceKeyslot(d, vk, p1, 0, kdfPBKDF2) },
		[]volState{s0, {name: "after", keys: map[int][]byte{0: p1}}}})

	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			// Count the writes and syncs of an uninterrupted run.
			img := luks2test.NewImage(t, imageSize)
			copyFile(t, sc.start, img)
			dry := &crashDev{f: openRW(t, img), budget: -1}
			if err := sc.op(dry); err != nil {
				t.Fatal(err)
			}
			total := dry.ops
			seen := map[string]int{}
			for _, torn := range []bool{false, true} {
				for n := 0; n <= total; n++ {
					t.Run(fmt.Sprintf("torn=%v/ops=%d", torn, n), func(t *testing.T) {
						img := luks2test.NewImage(t, imageSize)
						copyFile(t, sc.start, img)
						d := &crashDev{f: openRW(t, img), budget: n, torn: torn}
						err := sc.op(d)
						if n < total && !errors.Is(err, errCrash) {
							t.Fatalf("op with %d of %d ops allowed: %v, want the injected crash", n, total, err)
						}
						if n == total && err != nil {
							t.Fatal(err)
						}
						// cryptsetup checks every torn crash point (the ones that
						// leave a damaged copy behind) and the completed op; the
						// clean points are the same states without the damage.
						state := checkState(t, img, vk, sc.states, haveCS && (torn || n == total))
						seen[state]++
						if n == total && state != "after" {
							t.Fatalf("completed op left state %q", state)
						}
					})
				}
			}
			if seen["before"] == 0 || seen["after"] == 0 {
				t.Errorf("crash points reached states %v; want both before and after", seen)
			}
			t.Logf("%s: %d write/sync points, states reached %v", sc.name, total, seen)
		})
	}
}

func named(s volState, name string) volState { s.name = name; return s }
