package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// pcrEvent measures data into PCR 7 of every bank of the swtpm at addr (as
// firmware does), on a connection of its own: swtpm serves one at a time.
func pcrEvent(t *testing.T, addr, data string) {
	t.Helper()
	var conn net.Conn
	var err error
	for i := 0; i < 100; i++ { // swtpm may still be closing the last connection
		if conn, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	tp := tpm.NewStreamTransport(conn)
	defer tp.Close()
	d := sha256.Sum256([]byte(data))
	if _, err := (tpm2.PCREvent{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(tpm.SecureBootPCR), Auth: tpm2.PasswordAuth(nil)},
		EventData: tpm2.TPM2BEvent{Buffer: d[:]}}).Execute(tp); err != nil {
		t.Fatal(err)
	}
}

// TestLuksTestTokenClevis: a slot bound by Debian's real `clevis luks bind`
// (tpm2 pin, PCR 7 in the sha256 bank, over a swtpm) passes
// `cryptctl luks test-token --tpm swtpm:...` (exit 0, nothing written);
// after PCR 7 changes it fails with exit 2 and names PCR 7 and the
// mismatching policy.
func TestLuksTestTokenClevis(t *testing.T) {
	sw := swtpmtest.Start(t, "")
	addr := sw.Conn.RemoteAddr().(*net.TCPAddr)
	sw.Conn.Close() // free swtpm for clevis and cryptctl; cleanup still ends it
	spec := fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", addr.Port)
	pcrEvent(t, addr.String(), "secureboot-on")

	img := luks2test.NewImage(t, 20<<20)
	luks2test.MustCryptsetup(t, []byte("a"), "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	bind := exec.Command("clevis", "luks", "bind", "-y", "-k", "-", "-d", img, "tpm2", `{"pcr_ids":"7","pcr_bank":"sha256"}`)
	bind.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+spec)
	bind.Stdin = strings.NewReader("a")
	if out, err := bind.CombinedOutput(); err != nil {
		t.Fatalf("clevis luks bind tpm2: %v\n%s", err, out)
	}

	before, _ := os.ReadFile(img)
	testToken := []string{"luks", "test-token", img, "--tpm", spec}
	out, err := cryptctl(t, testToken...)
	if err != nil || !strings.Contains(out, "(clevis, key slots [1]): unsealed, opens key slot 1") {
		t.Fatalf("test-token on a clevis-bound slot: exit %d, %v\n%s", exitCode(err), err, out)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("test-token changed the image")
	}

	// the policy test-token computes from the PCRs now is clevis's
	tp, err := tpm.OpenSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	f, h := readHeader(t, img)
	ct, err := tpm.ParseClevisToken(h.Tokens[0].Raw)
	if err != nil {
		t.Fatal(err)
	}
	detail := strings.Join(clevisPCRDetail(tp, ct.JWE.Header.Clevis.TPM2), "\n")
	tp.Close()
	f.Close()
	if !strings.Contains(detail, "PCR 7 (sha256 bank): now ") || !strings.Contains(detail, "matches the token's") {
		t.Fatalf("PCR detail before PCR 7 changed:\n%s", detail)
	}

	pcrEvent(t, addr.String(), "secure boot keys changed")
	out, err = cryptctl(t, testToken...)
	t.Logf("after PCR 7 changed:\n%s", out)
	if exitCode(err) != exitNoKey || !strings.Contains(out, "(clevis, key slots [1]): FAILED: policy mismatch") ||
		!strings.Contains(out, "PCR 7 (sha256 bank): now ") || !strings.Contains(out, "POLICY MISMATCH") {
		t.Fatalf("test-token after PCR 7 changed: exit %d, %v\n%s", exitCode(err), err, out)
	}
}

// TestTestTokensClevisOtherPins: clevis tokens of pins cryptinit does not
// open (tang, sss) are reported as not supported, naming the pin, without
// a TPM being asked.
func TestTestTokensClevisOtherPins(t *testing.T) {
	img := luks2test.NewImage(t, 20<<20)
	luks2test.MustCryptsetup(t, []byte("a"), "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	b64 := base64.RawURLEncoding.EncodeToString
	w, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for id, pin := range []string{"tang", "sss"} {
		hdr := b64([]byte(`{"alg":"dir","enc":"A256GCM","clevis":{"pin":"` + pin + `"}}`))
		tok := `{"type":"clevis","keyslots":["0"],"jwe":{"protected":"` + hdr + `","iv":"` + b64(make([]byte, 12)) +
			`","ciphertext":"` + b64([]byte("x")) + `","tag":"` + b64(make([]byte, 16)) + `"}}`
		if _, err := luks2.ImportToken(w, id, []byte(tok), true); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	f, h := readHeader(t, img)
	var out bytes.Buffer
	if printTokenResults(&out, testTokens(context.Background(), f, h, nil, tpm.ErrNoTPM, nil, -1)) {
		t.Fatalf("a tang or sss token passed:\n%s", out.String())
	}
	for _, want := range []string{"token 0 (clevis, key slots [0]): FAILED: not supported: tang pin", "token 1 (clevis, key slots [0]): FAILED: not supported: sss pin"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
