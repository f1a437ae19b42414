package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/images/uki"
	"github.com/cryptinit/cryptinit/internal/testenv"
)

// TestImageBuildSignedReproducible: `cryptctl image build --uki --sb-key`
// writes SOURCE_DATE_EPOCH, or --source-date-epoch over it, as the Secure
// Boot signing time, so two builds give the same bytes; a SOURCE_DATE_EPOCH
// that is not Unix seconds is refused.
func TestImageBuildSignedReproducible(t *testing.T) {
	if _, err := os.Stat(uki.DefaultStub); err != nil {
		testenv.Missing(t, "no systemd-stub (apt-get install systemd-boot-efi): %v", err)
	}
	testenv.NeedTool(t, "objcopy", "apt-get install binutils")
	testenv.NeedTool(t, "osslsigncode", "apt-get install osslsigncode")
	testenv.NeedTool(t, "openssl", "apt-get install openssl")
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt")
	if b, err := exec.Command("openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test db",
		"-days", "1", "-keyout", key, "-out", cert).CombinedOutput(); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, b)
	}
	init, vmlinuz := filepath.Join(dir, "cryptinit"), filepath.Join(dir, "vmlinuz")
	for _, p := range []string{init, vmlinuz} {
		if err := os.WriteFile(p, bytes.Repeat([]byte(filepath.Base(p)), 1000), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := func(name string, extra ...string) ([]byte, string, error) {
		out := filepath.Join(dir, name)
		args := append([]string{"image", "build", "--kernel-version", "6.1.0-test", "--modules-dir", fakeModules(t),
			"--init", init, "--vmlinuz", vmlinuz, "--modules", "dm-crypt", "--uki", "--cmdline", "console=ttyS0",
			"--sb-key", key, "--sb-cert", cert, "-o", out}, extra...)
		log, err := cryptctl(t, args...)
		if err != nil {
			return nil, log, err
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		v, err := exec.Command("osslsigncode", "verify", "-CAfile", cert, "-in", out).CombinedOutput()
		if err != nil {
			t.Errorf("osslsigncode verify %s: %v\n%s", name, err, v)
		}
		return b, string(v), nil
	}
	tests := []struct {
		name, env string
		args      []string
		wantTime  string
	}{
		{"SOURCE_DATE_EPOCH", "1700000000", nil, "Nov 14 22:13:20 2023 GMT"},
		{"flag over SOURCE_DATE_EPOCH", "1700000000", []string{"--source-date-epoch", "86400"}, "Jan  2 00:00:00 1970 GMT"},
		{"neither", "", nil, "Jan  1 00:00:00 1970 GMT"},
	}
	for _, tt := range tests {
		t.Setenv("SOURCE_DATE_EPOCH", tt.env)
		var efis [][]byte
		for j := range 2 {
			b, verify, err := build(filepath.Base(t.TempDir())+".efi", tt.args...)
			if err != nil {
				t.Fatalf("%s: build %d: %v\n%s", tt.name, j, err, verify)
			}
			if !strings.Contains(verify, "Signing time: "+tt.wantTime) {
				t.Errorf("%s: signing time is not %s:\n%s", tt.name, tt.wantTime, verify)
			}
			efis = append(efis, b)
		}
		if !bytes.Equal(efis[0], efis[1]) {
			t.Errorf("%s: two builds differ", tt.name)
		}
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, log, err := build("bad.efi"); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Errorf("SOURCE_DATE_EPOCH=yesterday: err = %v, want a refusal naming it\n%s", err, log)
	}
}
