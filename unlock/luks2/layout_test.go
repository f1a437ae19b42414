package luks2

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// Keyslot areas go where cryptsetup would put them: also in gaps left by
// killed slots, and after larger metadata copies.
func TestAreaPlacementMatchesCryptsetup(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	for _, c := range []struct {
		name   string
		format []string
	}{
		{"default", nil},
		{"metadata-64k", []string{"--luks2-metadata-size", "65536", "--luks2-keyslots-size", "4194304"}},
		{"key-256", []string{"--key-size", "256"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := luks2test.NewImage(t, imageSize)
			p := []byte("p")
			csFormat(t, img, p, c.format...)
			for _, slot := range []string{"1", "2"} {
				luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p), "--key-slot", slot, "--pbkdf", "pbkdf2",
					"--pbkdf-force-iterations", "1000", img, luks2test.KeyFile(t, p))
			}
			luks2test.MustCryptsetup(t, nil, "luksKillSlot", "-q", img, "1")
			ref := luks2test.NewImage(t, imageSize)
			copyFile(t, img, ref)
			luks2test.MustCryptsetup(t, nil, "luksAddKey", "-q", "--key-file", luks2test.KeyFile(t, p), "--key-slot", "5", "--pbkdf", "pbkdf2",
				"--pbkdf-force-iterations", "1000", ref, luks2test.KeyFile(t, []byte("new")))
			f := openRW(t, img)
			h, _ := ReadHeader(f)
			vk, _, err := h.Unlock(f, p, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := AddKeyslot(f, vk, []byte("new"), 5, kdfPBKDF2); err != nil {
				t.Fatal(err)
			}
			ours, theirs := readHeaderFile(t, img).Keyslots[5].Area, readHeaderFile(t, ref).Keyslots[5].Area
			if ours != theirs {
				t.Errorf("slot 5 area: ours %+v, cryptsetup %+v", ours, theirs)
			}
			if err := luks2test.CheckKey(t, img, []byte("new"), 5); err != nil {
				t.Error(err)
			}
		})
	}
}

// rewriteJSON replaces the metadata of an image with edit(metadata), with
// valid checksums, as a foreign tool would.
func rewriteJSON(t *testing.T, img string, edit func(map[string]any)) {
	t.Helper()
	f := openRW(t, img)
	h, err := ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(h.RawJSON(), &m)
	edit(m)
	text, _ := json.Marshal(m)
	for _, off := range []int64{int64(h.MetadataSize), 0} {
		b, err := encodeCopy(off, h.MetadataSize, h.Seqid+1, h.Label, h.UUID, h.Subsystem, text, make([]byte, lenSalt))
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(b, off)
	}
}

func TestRefusesWhatItDoesNotUnderstand(t *testing.T) {
	pass := []byte("pw")
	for _, c := range []struct {
		name    string
		edit    func(map[string]any)
		wantErr error
	}{
		{"unknown config field", func(m map[string]any) { m["config"].(map[string]any)["x-future"] = "1" }, ErrUnknownMetadata},
		{"unknown keyslot field", func(m map[string]any) {
			m["keyslots"].(map[string]any)["0"].(map[string]any)["x-future"] = 1.0
		}, ErrUnknownMetadata},
		{"mandatory requirement", func(m map[string]any) {
			m["config"].(map[string]any)["requirements"] = map[string]any{"mandatory": []any{"online-reencrypt-v2"}}
		}, ErrRequirements},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, _ := formatPBKDF2(t, pass)
			rewriteJSON(t, img, c.edit)
			h := readHeaderFile(t, img)
			f := openRW(t, img)
			if _, _, err := h.Unlock(f, pass, AnySlot); err != nil {
				t.Errorf("reading and unlocking must still work: %v", err)
			}
			if err := SetFlags(f, []string{"allow-discards"}); !errors.Is(err, c.wantErr) {
				t.Errorf("write: %v, want %v", err, c.wantErr)
			}
			if _, err := h.Mapping(); (c.wantErr == ErrRequirements) != errors.Is(err, ErrRequirements) {
				t.Errorf("Mapping: %v", err)
			}
			if h2 := readHeaderFile(t, img); h2.Seqid != h.Seqid {
				t.Error("a refused write changed the header")
			}
		})
	}
}

func TestMetadataTooLargeWritesNothing(t *testing.T) {
	img, h := formatPBKDF2(t, []byte("pw"))
	big := `{"type":"x","keyslots":[],"blob":"` + strings.Repeat("A", 13000) + `"}`
	if _, err := ImportToken(openRW(t, img), 0, []byte(big), false); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("oversized token: %v", err)
	}
	f := openRW(t, img)
	vk, _, _ := h.Unlock(f, []byte("pw"), 0)
	// Fill the JSON area with tokens, then a keyslot no longer fits: the
	// key material must not be written either.
	for _, n := range []int{2000, 400, 80, 10} {
		for {
			tok := `{"type":"x","keyslots":[],"b":"` + strings.Repeat("B", n) + `"}`
			if _, err := ImportToken(f, AnyToken, []byte(tok), false); err != nil {
				break
			}
		}
	}
	full := readFile(t, img)
	if _, err := AddKeyslot(f, vk, []byte("x"), 1, kdfPBKDF2); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("AddKeyslot into a full JSON area: %v", err)
	}
	after := readFile(t, img)
	if !bytes.Equal(full, after) {
		t.Error("a refused AddKeyslot wrote to the device")
	}
}

// Metadata that passes its checksum but that cryptsetup would reject (key
// material outside the keyslots area, e.g. over the headers or the data) is
// not a valid copy.
func TestRejectsAreaOutsideKeyslotsArea(t *testing.T) {
	for _, off := range []string{"0", "16777216", "4096"} {
		img, _ := formatPBKDF2(t, []byte("pw"))
		rewriteJSON(t, img, func(m map[string]any) {
			m["keyslots"].(map[string]any)["0"].(map[string]any)["area"].(map[string]any)["offset"] = off
		})
		_, err := ReadHeader(openRO(t, img))
		if !errors.Is(err, ErrNoValidHeader) || !strings.Contains(err.Error(), "outside the keyslots area") {
			t.Errorf("area at %s: %v", off, err)
		}
	}
}

// maskSecrets replaces salts and digests so two headers can be compared.
func maskSecrets(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "salt" || k == "digest" {
				x[k] = "masked"
			} else {
				x[k] = maskSecrets(e)
			}
		}
	case []any:
		for i := range x {
			x[i] = maskSecrets(x[i])
		}
	}
	return v
}

// Our Format writes the same metadata as cryptsetup luksFormat with the same
// parameters, up to random salts, digests and the UUID.
func TestFormatLayoutEqualsCryptsetup(t *testing.T) {
	luks2test.NeedCryptsetup(t)
	for _, c := range []struct {
		name string
		args []string
		opts FormatOptions
	}{
		{"pbkdf2-512-4096", []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-size", "512", "--sector-size", "4096"},
			FormatOptions{KDF: kdfPBKDF2, KeySize: 512, SectorSize: 4096}},
		{"pbkdf2-sha512-256-512", []string{"--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1000", "--key-size", "256", "--sector-size", "512"},
			FormatOptions{KDF: kdfPBKDF2512, KeySize: 256, SectorSize: 512}},
		{"argon2id-slot3", []string{"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32768", "--pbkdf-parallel", "2", "--key-slot", "3"},
			FormatOptions{KDF: kdfArgon2id, Slot: 3}},
		{"argon2i-label", []string{"--pbkdf", "argon2i", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "16384", "--pbkdf-parallel", "1", "--label", "EPHEMERAL", "--subsystem", "talos"},
			FormatOptions{KDF: kdfArgon2i, Label: "EPHEMERAL", Subsystem: "talos"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pass := []byte("same")
			theirs := luks2test.NewImage(t, imageSize)
			luks2test.MustCryptsetup(t, nil, append(append([]string{"luksFormat", "-q", "--type", "luks2", "--key-file", luks2test.KeyFile(t, pass)}, c.args...), theirs)...)
			ours := luks2test.NewImage(t, imageSize)
			c.opts.DigestIterations = 1000
			if _, err := Format(openRW(t, ours), imageSize, pass, c.opts); err != nil {
				t.Fatal(err)
			}
			var a, b any
			json.Unmarshal([]byte(luks2test.MustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", ours)), &a)
			json.Unmarshal([]byte(luks2test.MustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", theirs)), &b)
			ja, _ := json.Marshal(maskSecrets(a))
			jb, _ := json.Marshal(maskSecrets(b))
			if !bytes.Equal(ja, jb) {
				t.Errorf("metadata differs from cryptsetup's:\nours   %s\ntheirs %s", ja, jb)
			}
			ho, ht := readHeaderFile(t, ours), readHeaderFile(t, theirs)
			if ho.Label != ht.Label || ho.Subsystem != ht.Subsystem || ho.MetadataSize != ht.MetadataSize || ho.checksum != ht.checksum {
				t.Errorf("binary header differs: ours %q %q %d %s, cryptsetup %q %q %d %s",
					ho.Label, ho.Subsystem, ho.MetadataSize, ho.checksum, ht.Label, ht.Subsystem, ht.MetadataSize, ht.checksum)
			}
		})
	}
}

// json-c is case-sensitive; so are we, where encoding/json would not be.
func TestJSONNamesAreCaseSensitive(t *testing.T) {
	img, _ := formatPBKDF2(t, []byte("pw"))
	rewriteJSON(t, img, func(m map[string]any) {
		m["Keyslots"] = m["keyslots"]
		delete(m, "keyslots")
	})
	if _, err := ReadHeader(openRO(t, img)); !errors.Is(err, ErrNoValidHeader) || !strings.Contains(err.Error(), `lacks "keyslots"`) {
		t.Errorf("ReadHeader: %v", err)
	}
}
