package uki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// testDBKey writes a self-signed RSA db key and certificate, as an operator's
// Secure Boot db key would be, and returns their paths.
func testDBKey(t *testing.T, dir string) (key, cert string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "cryptinit test db"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	key, cert = filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt")
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestSignedUKIReproducible signs the same UKI twice, a second apart, and
// wants the same bytes: the signing time in the Authenticode signature is
// Spec.SigningTime, not the clock. Both signatures must verify with sbverify
// and osslsigncode, which must report that signing time; another signing
// time must give other bytes (so the time is really the one written).
func TestSignedUKIReproducible(t *testing.T) {
	if _, err := os.Stat(DefaultStub); err != nil {
		testenv.Missing(t, "systemd-stub not installed (systemd-boot-efi; images/setup.sh installs it)")
	}
	testenv.NeedTool(t, "objcopy", "apt-get install binutils")
	testenv.NeedTool(t, "osslsigncode", "apt-get install osslsigncode")
	testenv.NeedTool(t, "sbverify", "apt-get install sbsigntool")
	dir := t.TempDir()
	file := func(name string, size int) string {
		p := filepath.Join(dir, name)
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i * 7)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, cert := testDBKey(t, dir)
	spec := Spec{Linux: file("linux", 64<<10+3), Initrd: file("initrd", 32<<10+1), OSRel: file("osrel", 77),
		Cmdline: "console=ttyS0", SigningTime: 1700000000}
	build := func(name string, s Spec) []byte {
		out := filepath.Join(dir, name)
		if err := Build(s, key, cert, out, nil); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := build("a.efi", spec)
	// A clock-stamped signature (sbsign's) changes from one second to the next.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond)))
	second := build("b.efi", spec)
	if !bytes.Equal(first, second) {
		t.Errorf("two signings of the same UKI differ (%d and %d bytes)", len(first), len(second))
	}
	for _, name := range []string{"a.efi", "b.efi"} {
		out := filepath.Join(dir, name)
		if b, err := exec.Command("sbverify", "--cert", cert, out).CombinedOutput(); err != nil {
			t.Errorf("sbverify %s: %v\n%s", name, err, b)
		}
		b, err := exec.Command("osslsigncode", "verify", "-CAfile", cert, "-in", out).CombinedOutput()
		if err != nil {
			t.Errorf("osslsigncode verify %s: %v\n%s", name, err, b)
		}
		if want := "Signing time: Nov 14 22:13:20 2023 GMT"; !strings.Contains(string(b), want) {
			t.Errorf("osslsigncode verify %s: no %q:\n%s", name, want, b)
		}
	}
	other := spec
	other.SigningTime = 0
	if bytes.Equal(first, build("c.efi", other)) {
		t.Errorf("signing times 1700000000 and 0 gave the same bytes: the signing time is not written")
	}
	// Signing over an existing file (a rebuild) replaces it.
	if !bytes.Equal(first, build("c.efi", spec)) {
		t.Errorf("re-signing over an existing output gave other bytes")
	}
}
