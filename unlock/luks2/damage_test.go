package luks2

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"hash"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

func formatPBKDF2(t *testing.T, pass []byte) (string, *Header) {
	t.Helper()
	img := luks2test.NewImage(t, imageSize)
	h, err := Format(openRW(t, img), imageSize, pass, FormatOptions{KDF: kdfPBKDF2, DigestIterations: 1000, KeySize: 256})
	if err != nil {
		t.Fatal(err)
	}
	return img, h
}

func smash(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f := openRW(t, path)
	junk := bytes.Repeat([]byte{0xA5}, n)
	if _, err := f.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedHeaders(t *testing.T) {
	pass := []byte("survivor")
	cases := []struct {
		name        string
		damage      func(t *testing.T, img string)
		wantErr     error
		wantSecond  bool
		wantWarning string
	}{
		{"intact", func(*testing.T, string) {}, nil, false, ""},
		{"primary JSON byte", func(t *testing.T, img string) { smash(t, img, 4096+10, 1) }, nil, true, "primary LUKS2 header damaged"},
		{"primary magic", func(t *testing.T, img string) { smash(t, img, 0, 6) }, nil, true, "primary LUKS2 header damaged"},
		{"primary zeroed", func(t *testing.T, img string) {
			f := openRW(t, img)
			f.WriteAt(make([]byte, 0x4000), 0)
		}, nil, true, "primary LUKS2 header damaged"},
		{"secondary checksum", func(t *testing.T, img string) { smash(t, img, 0x4000+offCsum, 4) }, nil, false, "secondary LUKS2 header damaged"},
		{"both", func(t *testing.T, img string) { smash(t, img, 200, 4); smash(t, img, 0x4000+5000, 1) }, ErrNoValidHeader, false, ""},
		{"foreign secondary with a higher seqid", func(t *testing.T, img string) {
			other, _ := formatPBKDF2(t, []byte("someone else"))
			SetFlags(openRW(t, other), nil) // seqid 2 > ours
			b := readFile(t, other)
			openRW(t, img).WriteAt(b[0x4000:0x8000], 0x4000)
		}, nil, false, "belongs to another volume"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, _ := formatPBKDF2(t, pass)
			c.damage(t, img)
			f := openRO(t, img)
			h, err := ReadHeader(f)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("ReadHeader: %v, want %v", err, c.wantErr)
			}
			if err != nil {
				return
			}
			if h.FromSecondary != c.wantSecond || (c.wantWarning != "" && !strings.Contains(strings.Join(h.Warnings, "\n"), c.wantWarning)) ||
				(c.wantWarning == "" && len(h.Warnings) > 0) {
				t.Errorf("FromSecondary %v warnings %q", h.FromSecondary, h.Warnings)
			}
			if _, _, err := h.Unlock(f, pass, AnySlot); err != nil {
				t.Errorf("unlock: %v", err)
			}
			if c.wantSecond {
				if luks2test.WantCryptsetup(t) {
					if err := luks2test.CheckKey(t, img, pass, -1); err != nil {
						t.Errorf("cryptsetup does not open it either: %v", err)
					}
				}
				// A write repairs the primary copy.
				if err := SetFlags(openRW(t, img), []string{"allow-discards"}); err != nil {
					t.Fatal(err)
				}
				if h := readHeaderFile(t, img); h.FromSecondary || len(h.Warnings) != 0 {
					t.Errorf("not repaired: %v", h.Warnings)
				}
			}
		})
	}
}

func TestNotLUKS(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := dir + "/" + name
		writeFile(t, p, b)
		return p
	}
	img, _ := formatPBKDF2(t, []byte("x"))
	full := readFile(t, img)
	random := make([]byte, 1<<20)
	rand.Read(random)
	for _, c := range []struct {
		name string
		path string
		want error
	}{
		{"empty", write("empty", nil), ErrNotLUKS},
		{"short text", write("text", []byte("root:x:0:0:root:/root:/bin/bash\n")), ErrNotLUKS},
		{"zeros", write("zeros", make([]byte, 1<<20)), ErrNotLUKS},
		{"random", write("random", random), ErrNotLUKS},
		{"truncated in binary header", write("t1", full[:1000]), ErrNoValidHeader},
		{"truncated in JSON", write("t2", full[:8000]), ErrNoValidHeader},
	} {
		_, err := ReadHeader(openRO(t, c.path))
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want an error (%v)", c.name, err, c.want)
		}
	}
}

// A LUKS1 volume made by cryptsetup: listed and unlocked, never written.
func TestLUKS1(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, imageSize)
	pass := []byte("legacy")
	luks2test.MustCryptsetup(t, nil, "luksFormat", "-q", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", luks2test.KeyFile(t, pass), img)
	luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, pass), "--key-slot", "4", "--pbkdf-force-iterations", "1000", img, luks2test.KeyFile(t, []byte("four")))
	h := readHeaderFile(t, img)
	if h.Version != 1 || len(h.Keyslots) != 2 || h.Keyslots[4].KDF.Type != "pbkdf2" {
		t.Fatalf("LUKS1 header: version %d keyslots %v", h.Version, idsOf(h.Keyslots))
	}
	key, slot, err := unlockFile(t, img, []byte("four"), AnySlot)
	if err != nil || slot != 4 {
		t.Fatalf("LUKS1 unlock: slot %d %v", slot, err)
	}
	if want := luks2test.VolumeKey(t, img, pass); !bytes.Equal(key, want) {
		t.Error("LUKS1 volume key differs from cryptsetup's")
	}
	f := openRW(t, img)
	if _, err := AddKeyslot(f, key, []byte("x"), AnySlot, kdfPBKDF2); !errors.Is(err, ErrLUKS1ReadOnly) {
		t.Errorf("AddKeyslot on LUKS1: %v", err)
	}
	if err := KillKeyslot(f, 4); !errors.Is(err, ErrLUKS1ReadOnly) {
		t.Errorf("KillKeyslot on LUKS1: %v", err)
	}
	if _, err := ImportToken(f, 0, []byte(`{"type":"x","keyslots":[]}`), false); !errors.Is(err, ErrLUKS1ReadOnly) {
		t.Errorf("ImportToken on LUKS1: %v", err)
	}
}

// Our PBKDF2 matches the standard library's for every hash and odd lengths.
func TestPBKDF2MatchesStdlib(t *testing.T) {
	long := bytes.Repeat([]byte("k"), 200) // longer than a block: hashed first
	for _, h := range []func() hash.Hash{sha1.New, sha256.New, sha512.New} {
		for _, pw := range [][]byte{nil, []byte("password"), long} {
			for _, n := range []int{1, 20, 32, 64, 65, 100} {
				want, err := pbkdf2.Key(h, string(pw), []byte("salt"), 3, n)
				if err != nil {
					t.Fatal(err)
				}
				if got := pbkdf2Key(h, pw, []byte("salt"), 3, n); !bytes.Equal(got, want) {
					t.Errorf("pbkdf2 len %d pw %d: %x != %x", n, len(pw), got, want)
				}
			}
		}
	}
}

func TestAFRoundTrip(t *testing.T) {
	for _, n := range []int{32, 33, 64} {
		key := make([]byte, n)
		rand.Read(key)
		for _, h := range []string{"sha1", "sha256", "sha512"} {
			split, err := afSplit(h, key, 17)
			if err != nil {
				t.Fatal(err)
			}
			got, err := afMerge(h, split, n, 17)
			if err != nil || !bytes.Equal(got, key) {
				t.Errorf("AF %s %d: round trip failed", h, n)
			}
			split[5] ^= 1
			if got, _ := afMerge(h, split, n, 17); bytes.Equal(got, key) {
				t.Errorf("AF %s %d: a flipped bit does not change the key", h, n)
			}
		}
	}
}

// Older volumes: keyslots encrypted with AES-CBC (ESSIV or plain64), LUKS1
// and LUKS2, made by cryptsetup, unlock to cryptsetup's volume key.
func TestLegacyKeyslotCiphers(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	for _, c := range []struct{ typ, cipher string }{
		{"luks1", "aes-cbc-essiv:sha256"}, {"luks1", "aes-cbc-plain64"}, {"luks2", "aes-cbc-essiv:sha256"}, {"luks2", "aes-cbc-plain64"},
	} {
		t.Run(c.typ+"/"+c.cipher, func(t *testing.T) {
			img := luks2test.NewImage(t, imageSize)
			pass := []byte("old")
			args := []string{"luksFormat", "-q", "--type", c.typ, "--cipher", c.cipher, "--key-size", "256", "--pbkdf-force-iterations", "1000", "--key-file", luks2test.KeyFile(t, pass)}
			if c.typ == "luks2" {
				args = append(args, "--pbkdf", "pbkdf2", "--keyslot-cipher", c.cipher, "--keyslot-key-size", "256")
			}
			luks2test.MustCryptsetup(t, nil, append(args, img)...)
			h := readHeaderFile(t, img)
			if h.Keyslots[0].Area.Encryption != c.cipher {
				t.Fatalf("keyslot cipher %q", h.Keyslots[0].Area.Encryption)
			}
			key, _, err := unlockFile(t, img, pass, AnySlot)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(key, luks2test.VolumeKey(t, img, pass)) {
				t.Error("volume key differs from cryptsetup's")
			}
			if _, _, err := unlockFile(t, img, []byte("wrong"), AnySlot); !errors.Is(err, ErrNoKeyslotOpens) {
				t.Errorf("wrong passphrase: %v", err)
			}
		})
	}
}

// A cryptsetup header with 64 KiB metadata copies and a wiped primary: the
// secondary is found by probing, opens, and a write restores the primary.
func TestSecondaryProbeOnCryptsetupHeader(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	img := luks2test.NewImage(t, imageSize)
	pass := []byte("probe")
	csFormat(t, img, pass, "--luks2-metadata-size", "65536", "--luks2-keyslots-size", "4194304")
	openRW(t, img).WriteAt(make([]byte, 4096), 0)
	h := readHeaderFile(t, img)
	if !h.FromSecondary || h.MetadataSize != 65536 {
		t.Fatalf("FromSecondary %v metadata size %d", h.FromSecondary, h.MetadataSize)
	}
	if _, _, err := unlockFile(t, img, pass, AnySlot); err != nil {
		t.Fatal(err)
	}
	if err := SetFlags(openRW(t, img), []string{"allow-discards"}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	if _, err := openRO(t, img).ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, magicPrimary) {
		t.Error("primary not rewritten")
	}
	if dump := luks2test.MustCryptsetup(t, nil, "luksDump", img); !strings.Contains(dump, "Metadata area: \t65536 [bytes]") || !strings.Contains(dump, "allow-discards") {
		t.Errorf("cryptsetup after repair:\n%s", dump)
	}
	if err := luks2test.CheckKey(t, img, pass, 0); err != nil {
		t.Error(err)
	}
}
