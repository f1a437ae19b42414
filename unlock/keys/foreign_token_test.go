package keys

import (
	"context"
	"encoding/base64"
	"errors"
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
