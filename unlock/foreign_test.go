package unlock

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// foreignTPM is a fake TPM that also unseals systemd-tpm2 and clevis
// tokens (as tpm.Sealer does), returning pass for either.
type foreignTPM struct {
	fakeTPM
	pass    string
	clevis  int // UnsealClevis calls
	systemd int // UnsealSystemd calls
}

func (f *foreignTPM) UnsealSystemd(context.Context, *tpm.SystemdToken) ([]byte, error) {
	f.systemd++
	return []byte(f.pass), nil
}

func (f *foreignTPM) UnsealClevis(context.Context, *tpm.ClevisToken) ([]byte, error) {
	f.clevis++
	return []byte(f.pass), nil
}

// tangToken is the shape clevis luks bind gives a tang pin: a flattened
// JWE with alg ECDH-ES (the key is agreed with the tang server), which
// cryptinit cannot decrypt.
func tangToken(slot string) []byte {
	b64 := base64.RawURLEncoding.EncodeToString
	prot := b64([]byte(`{"alg":"ECDH-ES","enc":"A256GCM","clevis":{"pin":"tang","tang":{"url":"http://tang.example","adv":{"keys":[]}}},"epk":{"kty":"EC","crv":"P-521","x":"AA","y":"AA"},"kid":"x"}`))
	return []byte(`{"type":"clevis","keyslots":["` + slot + `"],"jwe":{"ciphertext":"` + b64([]byte("0123456789abcdef")) +
		`","encrypted_key":"","iv":"` + b64(make([]byte, 12)) + `","protected":"` + prot + `","tag":"` + b64(make([]byte, 16)) + `"}}`)
}

// slotBytes is everything that makes up slot's key: its keyslot's JSON
// fields and its key material area.
func slotBytes(t *testing.T, dev *os.File, slot int) (luks2.Keyslot, []byte) {
	t.Helper()
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	ks, ok := hdr.Keyslots[slot]
	if !ok {
		t.Fatalf("slot %d is gone", slot)
	}
	area := make([]byte, ks.Area.Size)
	if _, err := dev.ReadAt(area, int64(ks.Area.Offset)); err != nil {
		t.Fatal(err)
	}
	return ks, area
}

// TestSyncKeepsForeignSlots: a slot whose token another tool wrote
// (clevis, systemd-tpm2, ...) is never re-keyed nor removed by sync,
// whether its key is configured and cannot open it (a clevis tang pin; a
// systemd-tpm2 secret that does not open its slot) or not configured at
// all. Its keyslot and token stay byte for byte, and the report names it.
func TestSyncKeepsForeignSlots(t *testing.T) {
	const slotPass = "the foreign tool's passphrase"
	systemd := func(slot string) []byte {
		return []byte(`{"type":"systemd-tpm2","keyslots":["` + slot + `"],"tpm2-blob":"AAAA","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00","tpm2-pin":false}`)
	}
	for _, tc := range []struct {
		name    string
		fs      int // the foreign slot; the static key that opens is in the other of 0 and 1
		token   []byte
		tokenID int
		fsKey   string // the foreign slot's key in the config, "" for none
		unseals string // what the fake TPM unseals from the foreign token
	}{
		{"clevis tang, configured tpm", 1, tangToken("1"), 0, "tpm: {}", slotPass},
		{"systemd-tpm2 wrong secret, configured tpm", 1, systemd("1"), 3, "tpm: {}", "not this slot's passphrase"},
		{"clevis tang, not configured", 1, tangToken("1"), 0, "", slotPass},
		{"systemd-tpm2, not configured", 1, systemd("1"), 3, "", slotPass},
		{"unknown token type, configured static", 1, []byte(`{"type":"acme-hsm","keyslots":["1"],"handle":"7"}`), 5, "static: {passphrase: other}", ""},
		// tried before the opener, failing: still no full sync at every boot
		{"systemd-tpm2 wrong secret before the opener", 0, systemd("0"), 3, "tpm: {}", "not this slot's passphrase"},
		{"clevis tang before the opener", 0, tangToken("0"), 1, "tpm: {}", slotPass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, ss := tc.fs, 1-tc.fs
			dev := image(t, imageSize)
			first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: " + itoa(ss) + ", static: {passphrase: a}}\n" + smallKDF
			r, err := (&Engine{}).Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte(slotPass), fs, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
				t.Fatal(err)
			}
			r.Zero()
			if _, err := luks2.ImportToken(dev, tc.tokenID, tc.token, false); err != nil {
				t.Fatal(err)
			}
			ksBefore, areaBefore := slotBytes(t, dev, fs)
			hdr, _ := luks2.ReadHeader(dev)
			tokBefore := bytes.Clone(hdr.Tokens[tc.tokenID].Raw)

			y := first
			if tc.fsKey != "" {
				y = "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: " + itoa(ss) + ", static: {passphrase: a}}\n    - {slot: " + itoa(fs) + ", " + tc.fsKey + "}\n" + smallKDF
			}
			e := &Engine{Env: keys.Env{TPM: &foreignTPM{pass: tc.unseals}}}
			for boot := 1; boot <= 2; boot++ {
				r, err = e.Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
				if err != nil {
					t.Fatal(err)
				}
				r.Zero()
				if r.Slot != ss || len(r.Sync.Replaced)+len(r.Sync.Removed)+len(r.Sync.Added) != 0 {
					t.Fatalf("boot %d: opened slot %d, sync %v: a foreign slot was written", boot, r.Slot, r.Sync)
				}
				if boot == 1 && (!slices.Contains(r.Sync.Foreign, fs) || !strings.Contains(r.Sync.String(), "slot "+itoa(fs)+": its ")) {
					t.Errorf("boot %d: sync report %q does not name foreign slot %d (Foreign %v)", boot, r.Sync, fs, r.Sync.Foreign)
				}
				// the report is not a problem: the fingerprint is stored and
				// the next boot checks nothing again
				if boot == 2 && !r.Sync.UpToDate {
					t.Errorf("boot 2: sync %v ran in full again (no fingerprint stored)", r.Sync)
				}
				ksAfter, areaAfter := slotBytes(t, dev, fs)
				hdr, _ := luks2.ReadHeader(dev)
				if !bytes.Equal(areaAfter, areaBefore) || !bytes.Equal(ksAfter.KDF.Salt, ksBefore.KDF.Salt) {
					t.Fatalf("boot %d: slot %d's key material changed", boot, fs)
				}
				if got := hdr.Tokens[tc.tokenID].Raw; !bytes.Equal(got, tokBefore) {
					t.Fatalf("boot %d: token %d changed:\n%s\nwant\n%s", boot, tc.tokenID, got, tokBefore)
				}
			}
			if !opens(t, dev, slotPass, fs) {
				t.Fatalf("slot %d no longer opens with its own passphrase", fs)
			}
		})
	}
}

// TestSyncDoesNotOverwriteForeignToken: clevis and systemd-cryptenroll put
// their token at the first free id, which may be the id of a slot the
// config wants a tpm key in (Talos's rule: token id == slot). Sync does not
// overwrite the other tool's token to enroll it: the slot is left empty and
// the problem says why.
func TestSyncDoesNotOverwriteForeignToken(t *testing.T) {
	dev := image(t, imageSize)
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n" + smallKDF
	r, err := (&Engine{}).Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte("tang's"), 2, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	r.Zero()
	tok := tangToken("2")
	if _, err := luks2.ImportToken(dev, 1, tok, false); err != nil {
		t.Fatal(err)
	}
	hdr, _ := luks2.ReadHeader(dev)
	before := bytes.Clone(hdr.Tokens[1].Raw)
	y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n    - {slot: 1, tpm: {}}\n" + smallKDF
	e := &Engine{Env: keys.Env{TPM: &foreignTPM{}}}
	r, err = e.Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	hdr, _ = luks2.ReadHeader(dev)
	if got := hdr.Tokens[1].Raw; !bytes.Equal(got, before) {
		t.Fatalf("the clevis token at id 1 was overwritten:\n%s", got)
	}
	if _, ok := hdr.Keyslots[1]; ok || slices.Contains(r.Sync.Added, 1) {
		t.Errorf("slot 1 enrolled without its token: sync %v", r.Sync)
	}
	if len(r.Sync.Problems) != 1 || !strings.Contains(r.Sync.Problems[0].Error(), "token id 1 holds a clevis token") {
		t.Errorf("sync problems %v, want one naming token id 1", r.Sync.Problems)
	}
	if !opens(t, dev, "tang's", 2) || !slices.Contains(r.Sync.Foreign, 2) {
		t.Errorf("slot 2 (clevis's) not kept: sync %v", r.Sync)
	}
}

// TestSyncDoesNotMarkForeignToken: a configured recovery key that opened
// its slot through another tool's token stored at id == slot does not get
// the recovery mark written into that token (foreign slots are kept
// anyway, marked or not).
func TestSyncDoesNotMarkForeignToken(t *testing.T) {
	const pass = "systemd's passphrase"
	dev := withForeignSlot0(t, pass)
	tok := []byte(`{"type":"systemd-tpm2","keyslots":["0"],"tpm2-blob":"AAAA","tpm2-pcrs":[7,15],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00","tpm2-pin":false}`)
	if _, err := luks2.ImportToken(dev, 0, tok, false); err != nil {
		t.Fatal(err)
	}
	hdr, _ := luks2.ReadHeader(dev)
	before := bytes.Clone(hdr.Tokens[0].Raw)
	y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, tpm: {}, recovery: true}\n    - {slot: 1, static: {passphrase: a}}\n" + smallKDF
	r, err := (&Engine{Env: keys.Env{TPM: &foreignTPM{pass: pass}}}).Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	if r.Slot != 0 {
		t.Fatalf("opened slot %d, want 0 through its systemd-tpm2 token", r.Slot)
	}
	hdr, _ = luks2.ReadHeader(dev)
	if got := hdr.Tokens[0].Raw; !bytes.Equal(got, before) {
		t.Fatalf("the systemd-tpm2 token was altered:\n%s", got)
	}
	if len(r.Sync.Problems) != 0 {
		t.Errorf("sync problems: %v", r.Sync.Problems)
	}
}

// TestUnauthenticatedSyncDoesNotPlanForeignRemoval: the changes an
// unauthenticated config's sync lists as skipped are those a full sync
// would make; a foreign slot is not one of them.
func TestUnauthenticatedSyncDoesNotPlanForeignRemoval(t *testing.T) {
	dev := image(t, imageSize)
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n" + smallKDF
	r, err := (&Engine{}).Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{1, 2} {
		if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte("other"), s, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	r.Zero()
	if _, err := luks2.ImportToken(dev, 0, tangToken("1"), false); err != nil {
		t.Fatal(err)
	}
	vol := volume(t, first, "u-data")
	vol.Trust = config.Trust{Source: "META tag 9"}
	r, err = (&Engine{}).Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	if got := strings.Join(r.Sync.Skipped, ", "); got != "remove slot 2" {
		t.Errorf("skipped %q, want only \"remove slot 2\" (slot 1 is clevis's)", got)
	}
}

// TestRecoveryMarkRespectsForeignTokens: a slot another tool's token names
// under another token id is not marked (no token appears at id == slot),
// and a recovery slot whose token id holds another tool's token for a
// different slot is left unmarked with a problem saying so, the foreign
// token byte for byte as it was.
func TestRecoveryMarkRespectsForeignTokens(t *testing.T) {
	const pass = "systemd's passphrase"
	dev := withForeignSlot0(t, pass)
	// systemd-tpm2 for slot 0, stored at token id 1 (the first free id, as
	// systemd-cryptenroll picks it)
	tok := []byte(`{"type":"systemd-tpm2","keyslots":["0"],"tpm2-blob":"AAAA","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00","tpm2-pin":false}`)
	if _, err := luks2.ImportToken(dev, 1, tok, false); err != nil {
		t.Fatal(err)
	}
	hdr, _ := luks2.ReadHeader(dev)
	before := bytes.Clone(hdr.Tokens[1].Raw)
	// slot 0 (foreign, opened through token 1) and slot 1 (static) both
	// configured as recovery keys
	y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, tpm: {}, recovery: true}\n    - {slot: 1, static: {passphrase: a}, recovery: true}\n" + smallKDF
	r, err := (&Engine{Env: keys.Env{TPM: &foreignTPM{pass: pass}}}).Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	hdr, _ = luks2.ReadHeader(dev)
	if _, ok := hdr.Tokens[0]; ok {
		t.Errorf("a token was written at id 0 for the foreign slot 0:\n%s", hdr.Tokens[0].Raw)
	}
	if got := hdr.Tokens[1].Raw; !bytes.Equal(got, before) {
		t.Errorf("the systemd-tpm2 token at id 1 was altered:\n%s", got)
	}
	found := false
	for _, p := range r.Sync.Problems {
		found = found || strings.Contains(p.Error(), "cannot mark as recovery key: token id 1 holds a systemd-tpm2 token")
	}
	if !found {
		t.Errorf("no problem says slot 1 could not be marked: %v", r.Sync.Problems)
	}
}

// withForeignSlot0 is u-data formatted with a static key in slot 1 and
// another tool's passphrase in slot 0 (its token is the caller's to add).
func withForeignSlot0(t *testing.T, pass string) luks2.Device {
	t.Helper()
	dev := image(t, imageSize)
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 1, static: {passphrase: a}}\n" + smallKDF
	r, err := (&Engine{}).Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Zero()
	if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte(pass), 0, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	return dev
}
