package luks2

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// costlyImage makes a real volume whose slot 0 (passphrase "zero") has its
// KDF rewritten to what patch says, with no derivation at that cost, and a
// cheap slot 1 (passphrase "one"). The rewrite goes through the same metadata
// writer as every other change, so the header is one cryptsetup reads.
func costlyImage(t *testing.T, patch func(k *jsonKDF)) (string, []byte) {
	t.Helper()
	path := luks2test.NewImage(t, imageSize)
	f := openRW(t, path)
	h, err := Format(f, imageSize, []byte("zero"), FormatOptions{KDF: kdfArgon2id})
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Unlock(f, []byte("zero"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := AddKeyslot(f, vk, []byte("one"), 1, kdfPBKDF2); err != nil {
		t.Fatal(err)
	}
	h, m, err := loadForWrite(f)
	if err != nil {
		t.Fatal(err)
	}
	patch(m.Keyslots["0"].KDF)
	if err := commitNext(f, h, m); err != nil {
		t.Fatal(err)
	}
	return path, vk
}

// TestKDFCostRefusesBigArgon2: a 2 GiB argon2id slot, as cryptsetup makes on
// a big machine, is refused on a machine with 1 GiB before any derivation
// (this test would otherwise allocate 2 GiB), with a reason naming the slot
// and both sizes; the cheap slot still opens with UnlockWithin.
func TestKDFCostRefusesBigArgon2(t *testing.T) {
	path, vk := costlyImage(t, func(k *jsonKDF) { k.Memory = 2 << 20 })
	if luks2test.HaveCryptsetup() {
		// cryptsetup agrees on what the header says (no derivation: luksDump)
		out := luks2test.MustCryptsetup(t, nil, "luksDump", path)
		if !strings.Contains(out, "2097152") {
			t.Errorf("cryptsetup does not see the 2 GiB slot:\n%s", out)
		}
	}
	f := openRO(t, path)
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.KDFCost(0)
	if err != nil || c.Memory != 2<<30 || c.Passes != int64(kdfArgon2id.Time) || c.Type != "argon2id" {
		t.Fatalf("KDFCost(0) = %+v, %v", c, err)
	}
	lim := KDFLimits{Memory: 1 << 30, Time: DefaultKDFTime}
	err = h.CheckKDF(0, lim)
	if !errors.Is(err, ErrKDFTooCostly) {
		t.Fatalf("CheckKDF(0) = %v, want ErrKDFTooCostly", err)
	}
	for _, want := range []string{"keyslot 0", "2048 MiB", "1024 MiB available"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reason %q lacks %q", err, want)
		}
	}
	if err := h.CheckKDF(1, lim); err != nil {
		t.Errorf("CheckKDF(1) (pbkdf2, 1000 iterations) = %v", err)
	}
	if err := h.CheckKDF(0, KDFLimits{Memory: 3 << 30}); err != nil {
		t.Errorf("with 3 GiB the slot fits: %v", err)
	}

	got, slot, skipped, err := h.UnlockWithin(f, []byte("one"), lim)
	if err != nil || slot != 1 || string(got) != string(vk) {
		t.Fatalf("UnlockWithin(one) = slot %d, %v", slot, err)
	}
	if len(skipped) != 1 || !errors.Is(skipped[0], ErrKDFTooCostly) || !strings.Contains(skipped[0].Error(), "keyslot 0") {
		t.Errorf("skipped = %v", skipped)
	}
	// slot 0's passphrase: slot 0 is never derived, slot 1 refuses it
	if _, _, _, err := h.UnlockWithin(f, []byte("zero"), lim); !errors.Is(err, ErrNoKeyslotOpens) {
		t.Errorf("UnlockWithin(zero) = %v, want ErrNoKeyslotOpens", err)
	}
	// only the costly slot left to try
	if _, _, _, err := h.UnlockWithin(f, []byte("zero"), KDFLimits{Memory: 1 << 30, Time: time.Nanosecond}); !errors.Is(err, ErrKDFTooCostly) {
		t.Errorf("every slot refused: %v, want ErrKDFTooCostly", err)
	}
}

// TestKDFCostTime: the time estimate refuses a header asking for hours
// (argon2 passes or pbkdf2 iterations) and passes cryptsetup's largest
// defaults.
func TestKDFCostTime(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kdf    KDF
		keyLen int
		ok     bool
	}{
		{"argon2id 4 GiB x 4 (cryptsetup's maximum memory)", KDF{Type: "argon2id", Memory: 4 << 20, Time: 4, Parallel: 4}, 64, true},
		{"argon2id 1 GiB x 1000", KDF{Type: "argon2id", Memory: 1 << 20, Time: 1000, Parallel: 4}, 64, false},
		{"argon2i 8 KiB x 2^31-1", KDF{Type: "argon2i", Memory: 8, Time: 1<<31 - 1, Parallel: 1}, 64, false},
		{"pbkdf2-sha256 4M (2 s on a fast machine), 64-byte key", KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 4_000_000}, 64, true},
		{"pbkdf2-sha256 2^31-1", KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1<<31 - 1}, 64, false},
		{"pbkdf2-sha512 100M, 64-byte key (one block)", KDF{Type: "pbkdf2", Hash: "sha512", Iterations: 100_000_000}, 64, true},
		{"pbkdf2-sha256 150M, 64-byte key (two blocks)", KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 150_000_000}, 64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Header{Keyslots: map[int]Keyslot{3: {ID: 3, KDF: tc.kdf, Area: Area{KeySize: tc.keyLen}}}}
			err := h.CheckKDF(3, DefaultKDFLimits(0))
			if (err == nil) != tc.ok {
				c, _ := h.KDFCost(3)
				t.Fatalf("CheckKDF = %v (cost %s), want ok=%v", err, c, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrKDFTooCostly) || !strings.Contains(err.Error(), "keyslot 3") || !strings.Contains(err.Error(), "limit is 2m0s")) {
				t.Errorf("reason %q", err)
			}
		})
	}
	if err := (&Header{}).CheckKDF(0, KDFLimits{}); !errors.Is(err, ErrSlotNotFound) {
		t.Errorf("empty slot: %v", err)
	}
}

// TestKDFCostPBKDF2Time: a real pbkdf2 slot rewritten to 2^31-1 iterations
// is refused by the time bound before it runs (it would take over ten
// minutes here).
func TestKDFCostPBKDF2Time(t *testing.T) {
	path, _ := costlyImage(t, func(k *jsonKDF) {
		*k = jsonKDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1<<31 - 1, Salt: k.Salt}
	})
	f := openRO(t, filepath.Clean(path))
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, slot, skipped, err := h.UnlockWithin(f, []byte("one"), DefaultKDFLimits(0))
	if err != nil || slot != 1 || len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "keyslot 0: pbkdf2") {
		t.Fatalf("slot %d, skipped %v, %v", slot, skipped, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %s: slot 0 was derived", d)
	}
}
