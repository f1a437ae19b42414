package luks2

import (
	"bytes"
	"crypto/aes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
	"golang.org/x/crypto/xts"
)

// Our Format, checked by cryptsetup: dump and open, per KDF, key and sector size.
func TestFormatAcceptedByCryptsetup(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	kdfs := map[string]KDF{"argon2id": kdfArgon2id, "argon2i": kdfArgon2i, "pbkdf2-sha256": kdfPBKDF2, "pbkdf2-sha512": kdfPBKDF2512}
	for name, kdf := range kdfs {
		for _, keySize := range []int{256, 512} {
			for _, sector := range []int{512, 4096} {
				t.Run(fmt.Sprintf("%s/key%d/sector%d", name, keySize, sector), func(t *testing.T) {
					img := luks2test.NewImage(t, imageSize)
					pass := []byte("correct horse " + name)
					slot := keySize / 256 // exercise a non-zero slot too
					h, err := Format(openRW(t, img), imageSize, pass, FormatOptions{
						Slot: slot, KeySize: keySize, SectorSize: sector, KDF: kdf, Label: "lbl-" + name, Subsystem: "sub",
						DigestIterations: 1000,
					})
					if err != nil {
						t.Fatal(err)
					}
					dump := luks2test.MustCryptsetup(t, nil, "luksDump", img)
					for _, want := range []string{
						"UUID:          \t" + h.UUID, "Label:         \tlbl-" + name, "Subsystem:     \tsub",
						fmt.Sprintf("sector: %d [bytes]", sector), fmt.Sprintf("  %d: luks2\n\tKey:        %d bits", slot, keySize),
						"PBKDF:      " + kdf.Type, "offset: 16777216 [bytes]", "Area offset:32768 [bytes]",
						fmt.Sprintf("Area length:%d [bytes]", map[int]int{256: 131072, 512: 258048}[keySize]),
					} {
						if !strings.Contains(dump, want) {
							t.Errorf("cryptsetup luksDump lacks %q:\n%s", want, dump)
						}
					}
					if err := luks2test.CheckKey(t, img, pass, slot); err != nil {
						t.Fatalf("cryptsetup does not open our header: %v", err)
					}
					if err := luks2test.CheckKey(t, img, []byte("wrong"), -1); err == nil {
						t.Fatal("cryptsetup opened our header with a wrong passphrase")
					}
					key, used, err := unlockFile(t, img, pass, AnySlot)
					if err != nil || used != slot {
						t.Fatalf("our unlock: slot %d, %v", used, err)
					}
					if cs := luks2test.VolumeKey(t, img, pass); !bytes.Equal(cs, key) || len(key) != keySize/8 {
						t.Fatalf("volume key differs from cryptsetup's (%d vs %d bytes)", len(key), len(cs))
					}
				})
			}
		}
	}
}

// A cryptsetup-made header with several slots and tokens: we list what
// cryptsetup lists and open the right slots with the same volume key.
func TestReadCryptsetupHeaders(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, imageSize)
	p0, p1, p3 := []byte("slot zero"), []byte("slot one"), []byte("slot three")
	csFormat(t, img, p0, "--key-size", "256", "--sector-size", "512", "--label", "STATE")
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p0), "--pbkdf", "argon2id", "--pbkdf-memory", "32768",
		"--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2", img, luks2test.KeyFile(t, p1))
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p0), "--key-slot", "3", "--pbkdf", "pbkdf2",
		"--hash", "sha512", "--pbkdf-force-iterations", "1000", img, luks2test.KeyFile(t, p3))
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p0), "--key-slot", "5", "--pbkdf", "argon2i", "--pbkdf-memory", "32768",
		"--pbkdf-force-iterations", "4", img, luks2test.KeyFile(t, []byte("doomed")))
	luks2test.MustCryptsetup(t, nil, "luksKillSlot", "-q", img, "5")
	talos := `{"type":"talos-tpm2","keyslots":["3"],"UserData":{"keyslots":[3],"alg":"sha256","note":"<&>"}}`
	luks2test.MustCryptsetup(t, []byte(talos), "token", "import", "--token-id", "3", img)
	luks2test.MustCryptsetup(t, []byte(`{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"AAEC"}}`), "token", "import", "--token-id", "7", img)
	luks2test.MustCryptsetup(t, nil, "config", "--priority", "ignore", "--key-slot", "1", img)

	h := readHeaderFile(t, img)
	cs := csMetadata(t, img)
	if got, want := idsOf(h.Keyslots), csIDs(cs["keyslots"]); !slices.Equal(got, want) || !slices.Equal(got, []int{0, 1, 3}) {
		t.Errorf("keyslots: ours %v, cryptsetup %v", got, want)
	}
	if got, want := idsOf(h.Tokens), csIDs(cs["tokens"]); !slices.Equal(got, want) {
		t.Errorf("tokens: ours %v, cryptsetup %v", got, want)
	}
	if h.Label != "STATE" || h.FromSecondary || len(h.Warnings) != 0 {
		t.Errorf("label %q fromSecondary %v warnings %v", h.Label, h.FromSecondary, h.Warnings)
	}
	if h.Keyslots[1].KDF.Type != "argon2id" || h.Keyslots[1].Priority != PriorityIgnore || h.Keyslots[3].KDF.Hash != "sha512" {
		t.Errorf("keyslot details: %+v", h.Keyslots)
	}
	for id, tok := range h.Tokens {
		exported := luks2test.MustCryptsetup(t, nil, "token", "export", "--token-id", itoa(id), img)
		if same, err := sameJSON(tok.Raw, []byte(exported)); err != nil || !same {
			t.Errorf("token %d: ours %s, cryptsetup %s", id, tok.Raw, exported)
		}
	}
	if h.Tokens[3].Type != "talos-tpm2" || !slices.Equal(h.Tokens[3].Keyslots, []int{3}) {
		t.Errorf("token 3: %+v", h.Tokens[3])
	}
	m, err := h.Mapping()
	if err != nil || m.Offset != 16<<20 || !m.Dynamic || m.SectorSize != 512 || m.Cipher != "aes-xts-plain64" || m.KeySize != 32 || m.AllowDiscards {
		t.Errorf("mapping %+v, %v", m, err)
	}

	want := luks2test.VolumeKey(t, img, p0)
	for _, c := range []struct {
		pass     []byte
		slot     int
		wantSlot int
		wantErr  error
	}{
		{p0, AnySlot, 0, nil},
		{p3, AnySlot, 3, nil},
		{p1, AnySlot, -1, ErrNoKeyslotOpens}, // priority ignore: skipped for any-slot
		{p1, 1, 1, nil},                      // but opens when asked for
		{p0, 3, -1, ErrNoKeyslotOpens},
		{[]byte("doomed"), AnySlot, -1, ErrNoKeyslotOpens},
		{p0, 5, -1, ErrSlotNotFound},
		{p0, 32, -1, ErrSlotRange},
	} {
		key, slot, err := unlockFile(t, img, c.pass, c.slot)
		if !errors.Is(err, c.wantErr) || slot != c.wantSlot {
			t.Errorf("unlock %q slot %d: got slot %d err %v, want slot %d err %v", c.pass, c.slot, slot, err, c.wantSlot, c.wantErr)
			continue
		}
		if err == nil && !bytes.Equal(key, want) {
			t.Errorf("unlock %q: volume key differs from cryptsetup --dump-volume-key", c.pass)
		}
	}
	// Raw JSON round trip: our typed form reproduces cryptsetup's metadata
	// exactly, so our writes lose nothing.
	if h.meta == nil {
		t.Fatal("cryptsetup's metadata not reproduced exactly by our types")
	}
	ours, _ := h.meta.encode()
	theirs, _ := json.Marshal(cs)
	if same, err := sameJSON(ours, theirs); err != nil || !same {
		t.Errorf("metadata differs:\nours   %s\ntheirs %s", ours, theirs)
	}
}

// Our writes on cryptsetup-made headers, checked by cryptsetup.
func TestWritesOnCryptsetupHeaders(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, imageSize)
	p0, p1, p2 := []byte("zero"), []byte("one"), []byte("two")
	csFormat(t, img, p0)
	f := openRW(t, img)
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Unlock(f, p0, AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	// Where would cryptsetup put slot 1? Ask it on a copy, then compare.
	ref := luks2test.NewImage(t, imageSize)
	copyFile(t, img, ref)
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p0), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", ref, luks2test.KeyFile(t, p1))
	refSlot := readHeaderFile(t, ref).Keyslots[1]

	if slot, err := AddKeyslot(f, vk, p1, AnySlot, kdfArgon2id); err != nil || slot != 1 {
		t.Fatalf("AddKeyslot: slot %d, %v", slot, err)
	}
	if _, err := AddKeyslot(f, vk, p2, 7, kdfPBKDF2512); err != nil {
		t.Fatal(err)
	}
	h = readHeaderFile(t, img)
	if got := h.Keyslots[1].Area; got.Offset != refSlot.Area.Offset || got.Size != refSlot.Area.Size {
		t.Errorf("slot 1 area %+v, cryptsetup chose %+v", got, refSlot.Area)
	}
	for slot, pass := range map[int][]byte{0: p0, 1: p1, 7: p2} {
		if err := luks2test.CheckKey(t, img, pass, slot); err != nil {
			t.Errorf("cryptsetup, slot %d after our AddKeyslot: %v", slot, err)
		}
	}
	tok := []byte(`{"type":"talos-tpm2","keyslots":["7"],"UserData":{"sealed_blob_private":"AAEC","pcrs":[7]}}`)
	if id, err := ImportToken(f, 7, tok, false); err != nil || id != 7 {
		t.Fatalf("ImportToken: %d %v", id, err)
	}
	if _, err := ImportToken(f, 7, tok, false); !errors.Is(err, ErrTokenInUse) {
		t.Errorf("second import without replace: %v, want ErrTokenInUse", err)
	}
	if _, err := ImportToken(f, 2, []byte(`{"type":"x","keyslots":["9"]}`), false); !errors.Is(err, ErrBadToken) {
		t.Errorf("token referencing a free keyslot: %v, want ErrBadToken", err)
	}
	exported := luks2test.MustCryptsetup(t, nil, "token", "export", "--token-id", "7", img)
	if same, _ := sameJSON(tok, []byte(exported)); !same {
		t.Errorf("cryptsetup exports %s, imported %s", exported, tok)
	}
	tok2 := []byte(`{"type":"sideroKMS","keyslots":["1"],"UserData":{"sealedData":"AAEC"}}`)
	if _, err := ImportToken(f, 7, tok2, true); err != nil {
		t.Fatal(err)
	}
	if exported := luks2test.MustCryptsetup(t, nil, "token", "export", "--token-id", "7", img); !strings.Contains(exported, "sideroKMS") {
		t.Errorf("replace: cryptsetup exports %s", exported)
	}
	if err := SetFlags(f, []string{"allow-discards", "no-read-workqueue"}); err != nil {
		t.Fatal(err)
	}
	if dump := luks2test.MustCryptsetup(t, nil, "luksDump", img); !strings.Contains(dump, "allow-discards no-read-workqueue") {
		t.Errorf("cryptsetup does not show our flags:\n%s", dump)
	}
	// Re-key slot 0 in place; cryptsetup opens it with the new passphrase only.
	pNew := []byte("zero, renewed")
	if err := ReplaceKeyslot(f, vk, pNew, 0, kdfArgon2i); err != nil {
		t.Fatal(err)
	}
	if err := luks2test.CheckKey(t, img, pNew, 0); err != nil {
		t.Errorf("cryptsetup after ReplaceKeyslot: %v", err)
	}
	if err := luks2test.CheckKey(t, img, p0, -1); err == nil {
		t.Error("the replaced passphrase still opens")
	}
	p0 = pNew
	if err := KillKeyslot(f, 1); err != nil {
		t.Fatal(err)
	}
	if err := luks2test.CheckKey(t, img, p1, -1); err == nil {
		t.Error("cryptsetup still opens a killed slot")
	}
	for slot, pass := range map[int][]byte{0: p0, 7: p2} {
		if err := luks2test.CheckKey(t, img, pass, slot); err != nil {
			t.Errorf("cryptsetup, slot %d after KillKeyslot(1): %v", slot, err)
		}
	}
	cs := csMetadata(t, img)
	if got := csIDs(cs["keyslots"]); !slices.Equal(got, []int{0, 7}) {
		t.Errorf("cryptsetup lists keyslots %v after kill", got)
	}
	if exported := luks2test.MustCryptsetup(t, nil, "token", "export", "--token-id", "7", img); !strings.Contains(exported, `"keyslots":[]`) {
		t.Errorf("killed slot still assigned to token 7: %s", exported)
	}
	if err := RemoveToken(f, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := luks2test.Cryptsetup(t, nil, "token", "export", "--token-id", "7", img); err == nil {
		t.Error("cryptsetup still exports a removed token")
	}
	if err := RemoveToken(f, 7); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("removing a missing token: %v", err)
	}
	h = readHeaderFile(t, img)
	if !h.HasFlag("allow-discards") || h.Seqid < 2 {
		t.Errorf("flags %v seqid %d", h.Flags, h.Seqid)
	}
	// cryptsetup can keep working on what we wrote.
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p2), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", img, luks2test.KeyFile(t, p1))
	if _, slot, err := unlockFile(t, img, p1, AnySlot); err != nil || slot != 1 {
		t.Errorf("our unlock after cryptsetup's add: slot %d, %v", slot, err)
	}
}

// Refusals: nothing is written.
func TestRefusals(t *testing.T) {
	img := luks2test.NewImage(t, imageSize)
	f := openRW(t, img)
	pass := []byte("pw")
	if _, err := Format(f, imageSize, pass, FormatOptions{KDF: KDF{Type: "scrypt"}}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"scrypt"`) {
		t.Errorf("scrypt: %v", err)
	}
	if _, err := Format(f, imageSize, pass, FormatOptions{Cipher: "serpent-xts-plain64", KDF: kdfPBKDF2}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "serpent-xts-plain64") {
		t.Errorf("serpent: %v", err)
	}
	if _, err := Format(f, imageSize, pass, FormatOptions{KDF: KDF{Type: "pbkdf2", Iterations: 10}}); !errors.Is(err, ErrInvalidParameter) {
		t.Errorf("10 iterations: %v", err)
	}
	if _, err := Format(f, imageSize, pass, FormatOptions{Slot: 32, KDF: kdfPBKDF2}); !errors.Is(err, ErrSlotRange) {
		t.Errorf("slot 32: %v", err)
	}
	if _, err := Format(f, 8<<20, pass, FormatOptions{KDF: kdfPBKDF2}); !errors.Is(err, ErrDeviceTooSmall) {
		t.Errorf("8 MiB: %v", err)
	}
	if _, err := ReadHeader(f); !errors.Is(err, ErrNotLUKS) {
		t.Fatalf("refused formats wrote something: %v", err)
	}
	h, err := Format(f, imageSize, pass, FormatOptions{KDF: kdfPBKDF2, DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Format(f, imageSize, pass, FormatOptions{KDF: kdfPBKDF2}); !errors.Is(err, ErrHasSignature) {
		t.Errorf("format over LUKS: %v", err)
	}
	vk, _, err := h.Unlock(f, pass, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := h.Seqid
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"add slot 32", second(AddKeyslot(f, vk, pass, 32, kdfPBKDF2)), ErrSlotRange},
		{"add slot in use", second(AddKeyslot(f, vk, pass, 0, kdfPBKDF2)), ErrSlotInUse},
		{"add with wrong key", second(AddKeyslot(f, make([]byte, 64), pass, 1, kdfPBKDF2)), ErrWrongVolumeKey},
		{"add argon2 without costs", second(AddKeyslot(f, vk, pass, 1, KDF{Type: "argon2id"})), ErrInvalidParameter},
		{"kill last", KillKeyslot(f, 0), ErrLastKeyslot},
		{"kill free", KillKeyslot(f, 4), ErrSlotNotFound},
		{"kill -1", KillKeyslot(f, -1), ErrSlotRange},
		{"token 32", second(ImportToken(f, 32, []byte(`{"type":"x","keyslots":[]}`), false)), ErrTokenRange},
		{"token not object", second(ImportToken(f, 1, []byte(`[1]`), false)), ErrBadToken},
		{"token no type", second(ImportToken(f, 1, []byte(`{"keyslots":[]}`), false)), ErrBadToken},
		{"token no keyslots", second(ImportToken(f, 1, []byte(`{"type":"x"}`), false)), ErrBadToken},
		{"token numeric keyslot", second(ImportToken(f, 1, []byte(`{"type":"x","keyslots":[0]}`), false)), ErrBadToken},
		{"token keyslot 00", second(ImportToken(f, 1, []byte(`{"type":"x","keyslots":["00"]}`), false)), ErrBadToken},
		{"keyring token without description", second(ImportToken(f, 1, []byte(`{"type":"luks2-keyring","keyslots":[]}`), false)), ErrBadToken},
		{"bad flag", SetFlags(f, []string{"go-faster"}), ErrUnsupported},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	if h2 := readHeaderFile(t, img); h2.Seqid != before || len(h2.Keyslots) != 1 || len(h2.Tokens) != 0 {
		t.Errorf("a refused change was written: seqid %d->%d", before, h2.Seqid)
	}
}

func second(_ int, err error) error { return err }

// An unbound key (cryptsetup luksAddKey --unbound) is listed, never opens the
// volume, and killing it removes its digest as cryptsetup does.
func TestUnboundKeyslot(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, imageSize)
	p0, pu := []byte("bound"), []byte("unbound")
	csFormat(t, img, p0)
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--unbound", "--key-size", "256", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-file", luks2test.KeyFile(t, p0), img, luks2test.KeyFile(t, pu))
	h := readHeaderFile(t, img)
	if len(h.Keyslots) != 2 || len(h.Digests) != 2 {
		t.Fatalf("keyslots %v digests %v", idsOf(h.Keyslots), idsOf(h.Digests))
	}
	if _, _, err := unlockFile(t, img, pu, AnySlot); !errors.Is(err, ErrNoKeyslotOpens) {
		t.Errorf("unbound key opened the volume: %v", err)
	}
	if err := KillKeyslot(openRW(t, img), 1); err != nil {
		t.Fatal(err)
	}
	cs := csMetadata(t, img)
	if got := csIDs(cs["digests"]); !slices.Equal(got, []int{0}) {
		t.Errorf("cryptsetup lists digests %v after killing the unbound key", got)
	}
	if err := luks2test.CheckKey(t, img, p0, 0); err != nil {
		t.Error(err)
	}
}

// The data segment as cryptsetup encrypts it (offline reencrypt of a known
// pattern): sector n of the segment decrypts with the volume key from our
// Unlock and the XTS tweak IVTweak + (n*SectorSize)/512, i.e. IVs count
// 512-byte sectors, as documented on Mapping.
func TestDataSegmentIV(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	for _, sector := range []int{512, 4096} {
		t.Run(fmt.Sprint(sector), func(t *testing.T) {
			img := luks2test.NewImage(t, 24<<20)
			pattern := func(i int) []byte { return []byte(fmt.Sprintf("blk%012d\n", i)) }
			f := openRW(t, img)
			var buf bytes.Buffer
			for i := 0; i < (24<<20)/16; i++ {
				buf.Write(pattern(i))
			}
			f.WriteAt(buf.Bytes(), 0)
			pass := []byte("iv")
			luks2test.MustCryptsetup(t, nil, "reencrypt", "-q", "--encrypt", "--type", "luks2", "--reduce-device-size", "16M", "--sector-size", itoa(sector),
				"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", luks2test.KeyFile(t, pass), img)
			h := readHeaderFile(t, img)
			m, err := h.Mapping()
			if err != nil || m.SectorSize != sector {
				t.Fatalf("mapping %+v %v", m, err)
			}
			vk, _, err := unlockFile(t, img, pass, AnySlot)
			if err != nil {
				t.Fatal(err)
			}
			c, err := xts.NewCipher(aes.NewCipher, vk)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{0, 1, 7, 100} {
				ct := make([]byte, sector)
				f.ReadAt(ct, int64(m.Offset)+int64(n*sector))
				pt := make([]byte, sector)
				c.Decrypt(pt, ct, m.IVTweak+uint64(n*sector/512))
				if want := pattern(n * sector / 16); !bytes.HasPrefix(pt, want) {
					t.Errorf("sector %d decrypts to %q, want %q", n, pt[:16], want)
				}
			}
		})
	}
}
