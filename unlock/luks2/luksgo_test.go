package luks2

import (
	"slices"
	"sort"
	"testing"

	luksgo "github.com/anatol/luks.go"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// github.com/anatol/luks.go as a third, independent reader of the headers we
// write (cryptsetup being the second): it must list our slots and tokens and
// open each slot with its passphrase only, mapping the same data segment.
func TestLuksGoReadsOurHeaders(t *testing.T) {
	for name, kdf := range map[string]KDF{"argon2id": kdfArgon2id, "argon2i": kdfArgon2i, "pbkdf2-sha256": kdfPBKDF2, "pbkdf2-sha512": kdfPBKDF2512} {
		t.Run(name, func(t *testing.T) {
			img := luks2test.NewImage(t, imageSize)
			f := openRW(t, img)
			h, err := Format(f, imageSize, []byte("first"), FormatOptions{Slot: 1, KDF: kdf, SectorSize: 512, DigestIterations: 1000, Flags: []string{"allow-discards"}})
			if err != nil {
				t.Fatal(err)
			}
			vk, _, err := h.Unlock(f, []byte("first"), 1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := AddKeyslot(f, vk, []byte("second"), 4, kdfPBKDF2); err != nil {
				t.Fatal(err)
			}
			if _, err := ImportToken(f, 4, []byte(`{"type":"talos-tpm2","keyslots":["4"]}`), false); err != nil {
				t.Fatal(err)
			}
			dev, err := luksgo.Open(img)
			if err != nil {
				t.Fatalf("luks.go cannot open our header: %v", err)
			}
			defer dev.Close()
			slots := dev.Slots()
			sort.Ints(slots)
			if !slices.Equal(slots, []int{1, 4}) || dev.UUID() != h.UUID || !slices.Equal(dev.FlagsGet(), []string{"allow-discards"}) {
				t.Errorf("luks.go sees slots %v uuid %s flags %v", slots, dev.UUID(), dev.FlagsGet())
			}
			toks, err := dev.Tokens()
			if err != nil || len(toks) != 1 || toks[0].ID != 4 || toks[0].Type != "talos-tpm2" {
				t.Errorf("luks.go tokens %+v %v", toks, err)
			}
			for slot, pass := range map[int]string{1: "first", 4: "second"} {
				v, err := dev.UnsealVolume(slot, []byte(pass))
				if err != nil {
					t.Fatalf("luks.go does not open slot %d: %v", slot, err)
				}
				m, _ := h.Mapping()
				if v.StorageOffset != m.Offset || v.StorageSectorSize != uint64(m.SectorSize) || v.StorageEncryption != m.Cipher {
					t.Errorf("luks.go maps offset %d sector %d cipher %s; we %+v", v.StorageOffset, v.StorageSectorSize, v.StorageEncryption, m)
				}
				if _, err := dev.UnsealVolume(slot, []byte("wrong")); err == nil {
					t.Errorf("luks.go opens slot %d with a wrong passphrase", slot)
				}
			}
		})
	}
}
