package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// kmsServer builds cmd/kms-server, writes a lab PKI (CA, server
// certificate for 127.0.0.1, a client certificate for node) into a temp
// directory, and serves TLS on loopback with extra flags ("{pki}" in them
// is the PKI directory). It returns the endpoint and the PKI directory.
func kmsServer(t *testing.T, node string, extra ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "kms-server")
	if out, err := exec.Command("go", "build", "-o", bin, "../kms-server").CombinedOutput(); err != nil {
		t.Fatalf("build kms-server: %v\n%s", err, out)
	}
	pki := filepath.Join(dir, "pki")
	if out, err := exec.Command(bin, "--generate-tls", pki, "--san", "127.0.0.1", "--client-certs", node).CombinedOutput(); err != nil {
		t.Fatalf("kms-server --generate-tls: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := append([]string{"--listen", addr, "--http-listen", "", "--audit-log", "",
		"--keyring", filepath.Join(dir, "keyring"),
		"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server-key.pem")}, extra...)
	for i := range args {
		args[i] = strings.ReplaceAll(args[i], "{pki}", pki)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kms-server did not listen on %s:\n%s", addr, stderr.String())
		}
	}
	return "https://" + addr, pki
}

// TestVolumeKMSFlagsMTLS: against a kms-server that requires client
// certificates, volume format, open and sync work with --kms-ca, --kms-cert
// and --kms-key; without the client certificate, or with another CA, they
// fail in well under a second saying which flag to fix.
func TestVolumeKMSFlagsMTLS(t *testing.T) {
	node := "5d1c6a0e-3b7f-4c2a-9e8d-7f6a5b4c3d2e"
	ep, pki := kmsServer(t, node, "--client-ca", "{pki}/ca.pem", "--require-client-cert")
	_, otherPKI := kmsServer(t, node) // only its CA is used
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kms.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n    - {slot: 0, kms: {endpoint: %q}}\n"+
		"  kdf: {type: pbkdf2, iterations: 1000}\n", ep)), 0o600)
	img := luks2test.NewImage(t, 20<<20)
	base := []string{"--config", cfg, "--volume", "EPHEMERAL", img, "--node-uuid", node}
	ca := []string{"--kms-ca", filepath.Join(pki, "ca.pem")}
	cert := []string{"--kms-cert", filepath.Join(pki, "client-"+node+".pem"), "--kms-key", filepath.Join(pki, "client-"+node+"-key.pem")}
	run := func(op string, flags ...[]string) (string, error, time.Duration) {
		args := append([]string{"volume", op}, base...)
		for _, f := range flags {
			args = append(args, f...)
		}
		start := time.Now()
		out, err := cryptctl(t, args...)
		return out, err, time.Since(start)
	}

	if out, err, _ := run("format", ca, cert); err != nil || !strings.Contains(out, "formatted EPHEMERAL") {
		t.Fatalf("format with --kms-ca/--kms-cert/--kms-key: %v\n%s", err, out)
	}
	for _, op := range []string{"open", "sync"} {
		if out, err, _ := run(op, ca, cert); err != nil || !strings.Contains(out, "with slot 0 (kms)") {
			t.Fatalf("%s with the client certificate: %v\n%s", op, err, out)
		}
	}
	// SSL_CERT_FILE still names the CA without --kms-ca (Go reads it
	// once per process, when the system roots are first loaded: here).
	t.Setenv("SSL_CERT_FILE", filepath.Join(pki, "ca.pem"))
	if out, err, _ := run("open", cert); err != nil || !strings.Contains(out, "with slot 0 (kms)") {
		t.Fatalf("open with SSL_CERT_FILE: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name  string
		flags [][]string
		want  string
	}{
		{"no client certificate", [][]string{ca}, "no client certificate was given (cryptctl: --kms-cert FILE --kms-key FILE)"},
		{"another CA", [][]string{{"--kms-ca", filepath.Join(otherPKI, "ca.pem")}, cert}, "is not signed by the CA in --kms-ca " + filepath.Join(otherPKI, "ca.pem")},
		{"client certificate of another CA", [][]string{ca, {"--kms-cert", filepath.Join(otherPKI, "client-"+node+".pem"), "--kms-key", filepath.Join(otherPKI, "client-"+node+"-key.pem")}},
			"(--kms-cert " + filepath.Join(otherPKI, "client-"+node+".pem") + ") is not signed by a CA the server trusts"},
	} {
		out, err, took := run("open", tc.flags...)
		t.Logf("%s (%v): %v", tc.name, took, err)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%s: %v\n%s\nwant %q", tc.name, err, out, tc.want)
		}
		if took > time.Second {
			t.Errorf("%s: took %v, want under 1s (no retries of a certificate failure)", tc.name, took)
		}
	}
	if _, err, _ := run("open", ca, cert[:2]); err == nil || !strings.Contains(err.Error(), "--kms-cert and --kms-key go together") {
		t.Errorf("--kms-cert without --kms-key: %v", err)
	}
}
