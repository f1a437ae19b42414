package imagebuild

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/images/initramfs"
	"github.com/cryptinit/cryptinit/images/uki"
	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/tpm"
)

// TestVMUKIReproducible builds the harness UKI twice from the cached Debian
// kernel, with a signed PCR policy, and compares the bytes; the UKI must hold
// every section the stub needs, .pcrsig included.
func TestVMUKIReproducible(t *testing.T) {
	out := os.Getenv("CRYPTINIT_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "out")
	}
	b, err := os.ReadFile(filepath.Join(out, "kernel.version"))
	if err != nil {
		testenv.MissingForVM(t, "no cached Debian kernel (make image): %v", err)
	}
	testenv.NeedTool(t, "objcopy", "apt-get install binutils")
	if _, err := os.Stat(uki.DefaultStub); err != nil {
		testenv.Missing(t, "no systemd-stub (apt-get install systemd-boot-efi): %v", err)
	}
	release := strings.TrimSpace(string(b))
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pcrKey := filepath.Join(dir, "pcr.pem")
	der := x509.MarshalPKCS1PrivateKey(key)
	if err := os.WriteFile(pcrKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	var efis [][]byte
	var o Options
	for i := range 2 {
		o = Options{
			Initramfs: initramfs.Options{KernelVersion: release, ModulesDir: filepath.Join(out, "kernel", "lib", "modules", release),
				Init: filepath.Join(out, "bin", "cryptinit"), Classes: append(append([]initramfs.Class{}, initramfs.Base...), initramfs.Virtio),
				Compress: "zstd"},
			Out: filepath.Join(dir, "uki.efi"), UKI: true, Vmlinuz: filepath.Join(out, "vmlinuz"),
			Cmdline: "console=ttyS0", PCRKey: pcrKey,
		}
		var log bytes.Buffer
		if err := Run(context.Background(), o, &log); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, log.String())
		}
		if !strings.Contains(log.String(), "no --sb-key") {
			t.Errorf("build %d: no warning for an unsigned UKI:\n%s", i, log.String())
		}
		b, err := os.ReadFile(o.Out)
		if err != nil {
			t.Fatal(err)
		}
		efis = append(efis, b)
	}
	if !bytes.Equal(efis[0], efis[1]) {
		t.Errorf("two builds of the same UKI differ (%d and %d bytes)", len(efis[0]), len(efis[1]))
	}
	for _, sec := range []string{".osrel", ".cmdline", ".linux", ".initrd", ".pcrpkey", ".pcrsig"} {
		if _, err := tpm.ReadUKISection(filepath.Join(dir, "uki.efi"), sec); err != nil {
			t.Errorf("UKI section %s: %v", sec, err)
		}
	}
	// Without --pcr-key: no .pcrsig, and a warning that says what it costs.
	o.PCRKey = ""
	var log bytes.Buffer
	if err := Run(context.Background(), o, &log); err != nil {
		t.Fatalf("build without --pcr-key: %v\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "tpm keys cannot unseal") {
		t.Errorf("no warning about the missing PCR signature:\n%s", log.String())
	}
	if _, err := tpm.ReadUKISection(o.Out, ".pcrsig"); err == nil {
		t.Errorf("UKI built without --pcr-key has a .pcrsig")
	}
}

// TestRunRefusesHalfSigning: a db key without its certificate, or signing
// keys for a bare initramfs, are refused before anything is built.
func TestRunRefusesHalfSigning(t *testing.T) {
	err := Run(context.Background(), Options{Out: "x", SBKey: "db.key"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--sb-cert") {
		t.Errorf("--sb-key without --sb-cert: err = %v", err)
	}
	err = Run(context.Background(), Options{Out: "x", PCRKey: "k"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--uki") {
		t.Errorf("--pcr-key without --uki: err = %v", err)
	}
}

// TestRunWritesPrivateImage: an initramfs holding the KMS client key is
// written mode 0600, also over an existing 0644 file (a rename keeps the
// new file's mode), and holds the key.
func TestRunWritesPrivateImage(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"modules/modules.dep":          "kernel/fs/xfs/xfs.ko:\n",
		"modules/kernel/fs/xfs/xfs.ko": "xfs module",
		"cryptinit":                    "#!/bin/false\n",
		"kms-key.pem":                  "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "initrd.img")
	for _, existing := range []bool{false, true} {
		if existing {
			if err := os.WriteFile(out, []byte("old image"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		o := Options{Out: out, Initramfs: initramfs.Options{KernelVersion: "6.1.0-test", ModulesDir: filepath.Join(dir, "modules"),
			Init: filepath.Join(dir, "cryptinit"), Tools: []initramfs.Tool{}, KMSKey: filepath.Join(dir, "kms-key.pem"), Compress: "none"}}
		if err := Run(context.Background(), o, io.Discard); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("existing file %v: image mode %v, want 0600: it holds the KMS client key", existing, st.Mode().Perm())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("not a real key")) {
			t.Errorf("existing file %v: the image lacks the KMS key", existing)
		}
	}
}
