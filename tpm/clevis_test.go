package tpm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
)

// clevisJWE builds a JWE as `jose jwe enc -c` does for clevis: alg dir,
// enc A256GCM, the protected header's base64url text as additional data.
func clevisJWE(t *testing.T, header string, key, plaintext []byte) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	prot := b64([]byte(header))
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, 12)
	sealed := gcm.Seal(nil, iv, plaintext, []byte(prot))
	ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	return strings.Join([]string{prot, "", b64(iv), b64(ct), b64(tag)}, ".")
}

func TestClevisJWE(t *testing.T) {
	key := make([]byte, 32)
	key[0] = 1
	jwk, _ := json.Marshal(map[string]string{"kty": "oct", "alg": "A256GCM", "k": base64.RawURLEncoding.EncodeToString(key)})
	jwk = append(jwk, '\n') // clevis seals the JWK with a trailing newline
	const hdr = `{"alg":"dir","enc":"A256GCM","clevis":{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AA","jwk_priv":"AA","pcr_bank":"sha1","pcr_ids":"0,7"}}}`
	compact := clevisJWE(t, hdr, key, []byte("passphrase"))
	parts := strings.Split(compact, ".")
	flat, _ := json.Marshal(map[string]string{"protected": parts[0], "encrypted_key": "", "iv": parts[2], "ciphertext": parts[3], "tag": parts[4]})
	token := `{"type":"clevis","keyslots":["1"],"jwe":` + string(flat) + `}`

	tok, err := ParseClevisToken([]byte(token))
	if err != nil {
		t.Fatal(err)
	}
	c := tok.JWE.Header.Clevis
	if c.Pin != "tpm2" || c.TPM2 == nil || c.TPM2.PCRIDs != "0,7" || c.TPM2.PCRBank != "sha1" || tok.Keyslots[0] != "1" {
		t.Fatalf("parsed %+v %+v", tok, c.TPM2)
	}
	for _, in := range []string{compact, `"` + compact + `"`} {
		j, err := ParseClevisJWE([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := j.decrypt(jwk); err != nil || string(got) != "passphrase" {
			t.Fatalf("decrypt %q: %q, %v", in[:10], got, err)
		}
	}
	if pcrs, err := parsePCRIDs(string(c.TPM2.PCRIDs)); err != nil || len(pcrs) != 2 || pcrs[0] != 0 || pcrs[1] != 7 {
		t.Fatalf("pcr_ids: %v %v", pcrs, err)
	}

	for in, want := range map[string]ClevisPCRIDs{`"7"`: "7", `[0, 7]`: "0,7", `["0","7"]`: "0,7"} {
		var got ClevisPCRIDs
		if err := json.Unmarshal([]byte(in), &got); err != nil || got != want {
			t.Errorf("pcr_ids %s: %q, %v; want %q", in, got, err, want)
		}
	}

	// The protected header is authenticated: a header edited to bind other
	// PCRs (or any other change) does not decrypt.
	edited := strings.Replace(hdr, `"0,7"`, `"7"`, 1)
	forged := base64.RawURLEncoding.EncodeToString([]byte(edited)) + compact[len(parts[0]):]
	j, err := ParseClevisJWE([]byte(forged))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.decrypt(jwk); err == nil {
		t.Fatal("a JWE with an edited protected header decrypted")
	}
	// Another key does not decrypt either.
	other, _ := json.Marshal(map[string]string{"kty": "oct", "k": base64.RawURLEncoding.EncodeToString(make([]byte, 32))})
	if j, _ := ParseClevisJWE([]byte(compact)); j != nil {
		if _, err := j.decrypt(other); err == nil {
			t.Fatal("decrypted with another key")
		}
	}

	bad := []struct{ name, header string }{
		{"not dir", `{"alg":"A256KW","enc":"A256GCM","clevis":{"pin":"tpm2"}}`},
		{"not A256GCM", `{"alg":"dir","enc":"A128CBC-HS256","clevis":{"pin":"tpm2"}}`},
	}
	for _, b := range bad {
		if _, err := ParseClevisJWE([]byte(clevisJWE(t, b.header, key, []byte("x")))); err == nil {
			t.Errorf("%s: parsed", b.name)
		}
	}
	if _, err := ParseClevisJWE([]byte("a.b.c")); err == nil {
		t.Error("a 3-part compact JWE parsed")
	}
}

// TestClevisOtherPins: tang (and sss) pins are refused, saying so, before
// the TPM is touched.
func TestClevisOtherPins(t *testing.T) {
	key := make([]byte, 32)
	signed := `{"alg":"dir","enc":"A256GCM","clevis":{"pin":"tpm2","tpm2":{"hash":"sha256","key":"ecc","jwk_pub":"AA","jwk_priv":"AA","policy_pubkey_path":"/etc/key.pem"}}}`
	j, err := ParseClevisJWE([]byte(clevisJWE(t, signed, key, []byte("x"))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Sealer{}).UnsealClevis(context.Background(), &ClevisToken{JWE: j}); err == nil || !strings.Contains(err.Error(), "policy_pubkey_path") {
		t.Errorf("signed-policy tpm2 pin: err = %v", err)
	}
	// the pin is read first: a tang pin's ECDH-ES JWE (what clevis luks
	// bind tang writes) and an sss pin's are unsupported, not malformed
	for _, c := range []struct{ pin, header string }{
		{"tang", `{"alg":"ECDH-ES","enc":"A256GCM","clevis":{"pin":"tang","tang":{"url":"http://tang"}},"epk":{"kty":"EC","crv":"P-521"},"kid":"k"}`},
		{"sss", `{"alg":"dir","enc":"A256GCM","clevis":{"pin":"sss","sss":{"t":1,"jwe":[]}}}`},
		{"", `{"alg":"dir","enc":"A256GCM"}`},
	} {
		_, err := ParseClevisJWE([]byte(clevisJWE(t, c.header, key, []byte("x"))))
		if !errors.Is(err, ErrClevisPinUnsupported) || !strings.Contains(err.Error(), `pin "`+c.pin+`"`) {
			t.Errorf("pin %q: err = %v, want ErrClevisPinUnsupported naming the pin", c.pin, err)
		}
		// a JWE that slipped past parsing is refused by the unseal too
		j := &ClevisJWE{}
		j.Header.Clevis.Pin = c.pin
		if _, err := (&Sealer{}).UnsealClevis(context.Background(), &ClevisToken{Keyslots: []string{"1"}, JWE: j}); !errors.Is(err, ErrClevisPinUnsupported) {
			t.Errorf("pin %q unseal: err = %v, want ErrClevisPinUnsupported", c.pin, err)
		}
	}
}

// TestClevisEncryptCompact decrypts, on a swtpm, the compact JWE that
// Debian's real `clevis encrypt tpm2` prints (clevis luks bind stores the
// same JWE in flattened JSON form; unlock's TestClevisBoundSlotOpens covers
// that).
func TestClevisEncryptCompact(t *testing.T) {
	for _, tool := range []string{"clevis", "clevis-encrypt-tpm2", "tpm2_createprimary"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not installed (images/setup.sh installs clevis-tpm2 and tpm2-tools)", tool)
		}
	}
	sw := swtpmtest.Start(t, "")
	addr := sw.Conn.RemoteAddr().(*net.TCPAddr)
	_ = sw.Conn.Close() // swtpm serves one client at a time: let tpm2-tools in
	cmd := exec.Command("clevis", "encrypt", "tpm2", `{"pcr_ids":"7","pcr_bank":"sha256"}`)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port="+strconv.Itoa(addr.Port))
	cmd.Stdin = strings.NewReader("sealed by clevis")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("clevis encrypt tpm2: %v\n%s", err, stderr.String())
	}
	j, err := ParseClevisJWE(out)
	if err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	if j.Header.Clevis.TPM2 == nil || j.Header.Clevis.TPM2.PCRIDs != "7" || j.Header.Clevis.TPM2.PCRBank != "sha256" {
		t.Fatalf("header %+v", j.Header)
	}
	var conn net.Conn
	for i := 0; i < 100; i++ {
		if conn, err = net.Dial("tcp", addr.String()); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	tr := NewStreamTransport(conn)
	defer tr.Close()
	s := NewSealer(tr, &StaticSource{})
	got, err := s.UnsealClevis(context.Background(), &ClevisToken{JWE: j})
	if err != nil || string(got) != "sealed by clevis" {
		t.Fatalf("UnsealClevis: %q, %v", got, err)
	}
	if err := ExtendPCR(tr, SecureBootPCR, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnsealClevis(context.Background(), &ClevisToken{JWE: j}); !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("after PCR 7 changed: err = %v, want ErrPCRMismatch", err)
	}
}

func FuzzParseClevisToken(f *testing.F) {
	f.Add([]byte(`{"type":"clevis","keyslots":["1"],"jwe":{"protected":"e30","iv":"","ciphertext":"","tag":""}}`))
	f.Add([]byte(`{"type":"clevis","jwe":"a.b.c.d.e"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseClevisToken(data)
		if err == nil && tok.JWE == nil {
			t.Fatal("no error and no JWE")
		}
	})
}
