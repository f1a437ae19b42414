package keys

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
)

// foreignTPM unseals nothing itself; it counts the foreign unseals asked.
type foreignTPM struct{ calls int }

func (*foreignTPM) Seal(context.Context, []byte, []int) (*tpm.Sealed, error) {
	return nil, errors.New("not used")
}
func (*foreignTPM) Unseal(context.Context, *tpm.Sealed) ([]byte, error) {
	return nil, errors.New("not used")
}
func (f *foreignTPM) UnsealClevis(context.Context, *tpm.ClevisToken) ([]byte, error) {
	f.calls++
	return []byte("x"), nil
}
func (f *foreignTPM) UnsealSystemd(context.Context, *tpm.SystemdToken) ([]byte, error) {
	f.calls++
	return []byte("x"), nil
}

// TestForeignTokenErrorsAreUnavailable: a clevis or systemd-tpm2 token the
// tpm key cannot use (a tang or sss pin, a malformed JWE or blob) makes the
// key unavailable, never ErrBadToken: sync replaces a slot on ErrBadToken,
// which would destroy the other tool's binding.
func TestForeignTokenErrorsAreUnavailable(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	clevis := func(header string) []byte {
		return []byte(`{"type":"clevis","keyslots":["1"],"jwe":{"protected":"` + b64([]byte(header)) +
			`","encrypted_key":"","iv":"` + b64(make([]byte, 12)) + `","ciphertext":"AAAA","tag":"` + b64(make([]byte, 16)) + `"}}`)
	}
	for _, c := range []struct {
		name, want string
		token      []byte
	}{
		{"clevis tang", "tang", clevis(`{"alg":"ECDH-ES","enc":"A256GCM","clevis":{"pin":"tang","tang":{"url":"http://tang"}},"epk":{"kty":"EC"}}`)},
		{"clevis sss", "sss", clevis(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"sss","sss":{"t":1}}}`)},
		{"clevis tpm2 bad alg", "A256KW", clevis(`{"alg":"A256KW","enc":"A256GCM","clevis":{"pin":"tpm2","tpm2":{}}}`)},
		{"clevis no jwe", "jwe", []byte(`{"type":"clevis","keyslots":["1"]}`)},
		{"systemd-tpm2 without blob", "systemd-tpm2", []byte(`{"type":"systemd-tpm2","keyslots":["1"]}`)},
	} {
		f := &foreignTPM{}
		k := &TPMKey{TPM: f}
		_, err := k.Passphrase(context.Background(), Slot{VolumeID: "u-data", Slot: 1, Assigned: [][]byte{c.token}})
		if !errors.Is(err, ErrKeyUnavailable) || errors.Is(err, ErrBadToken) || errors.Is(err, ErrWrongKey) ||
			!strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "slot 1") {
			t.Errorf("%s: err = %v, want ErrKeyUnavailable (not ErrBadToken) naming slot 1 and %q", c.name, err, c.want)
		}
		if f.calls != 0 {
			t.Errorf("%s: the TPM was asked to unseal a token cryptinit cannot use", c.name)
		}
	}
}

// TestUnlatchedForeignToken: a tpm key that opens its slot through a
// systemd-tpm2 or clevis tpm2 token whose policy lacks PCR 15 is reported
// (that slot still unseals after the latch); tokens that bind PCR 15,
// cryptinit's own, and those a tpm key cannot open are not.
func TestUnlatchedForeignToken(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	clevis := func(header string) []byte {
		return []byte(`{"type":"clevis","keyslots":["1"],"jwe":{"protected":"` + b64([]byte(header)) +
			`","encrypted_key":"","iv":"` + b64(make([]byte, 12)) + `","ciphertext":"AAAA","tag":"` + b64(make([]byte, 16)) + `"}}`)
	}
	tpm2Pin := func(pcrIDs string) []byte {
		return clevis(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AA","jwk_priv":"AA","pcr_bank":"sha256","pcr_ids":"` + pcrIDs + `"}}}`)
	}
	systemd := func(pcrs, pubkeyPCRs string) []byte {
		return []byte(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AAAA","tpm2-pcrs":` + pcrs + `,"tpm2_pubkey_pcrs":` + pubkeyPCRs + `,"tpm2-pcr-bank":"sha256","tpm2-policy-hash":"00"}`)
	}
	talos := []byte(`{"type":"talos-tpm2","keyslots":["1"],"UserData":{}}`)
	for _, c := range []struct {
		name      string
		token     []byte // assigned to slot 1
		idToken   []byte // token id 1
		typ       string
		pcrs      []int
		unlatched bool
	}{
		{"systemd-tpm2 PCR 7", systemd("[7]", "[]"), nil, "systemd-tpm2", []int{7}, true},
		{"systemd-tpm2 PCR 7, signed 11", systemd("[7]", "[11]"), nil, "systemd-tpm2", []int{7, 11}, true},
		{"systemd-tpm2 PCRs 7 and 15", systemd("[7,15]", "[]"), nil, "", nil, false},
		{"clevis tpm2 PCR 7", tpm2Pin("7"), nil, "clevis", []int{7}, true},
		{"clevis tpm2 no PCRs", tpm2Pin(""), nil, "clevis", nil, true},
		{"clevis tpm2 PCRs 7 and 15", tpm2Pin("7,15"), nil, "", nil, false},
		{"clevis tang", clevis(`{"alg":"ECDH-ES","enc":"A256GCM","clevis":{"pin":"tang"}}`), nil, "", nil, false},
		{"talos-tpm2 first", systemd("[7]", "[]"), talos, "", nil, false},
	} {
		typ, pcrs, unlatched := UnlatchedForeignToken(Slot{VolumeID: "u-data", Slot: 1, Token: c.idToken, Assigned: [][]byte{c.token}})
		if unlatched != c.unlatched || (unlatched && (typ != c.typ || !slices.Equal(pcrs, c.pcrs))) {
			t.Errorf("%s: got %q %v %v, want %q %v %v", c.name, typ, pcrs, unlatched, c.typ, c.pcrs, c.unlatched)
		}
	}
}
