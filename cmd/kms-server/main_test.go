package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/server"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const node = "5d1c6a0e-3b7f-4c2a-9e8d-7f6a5b4c3d2e"

func TestServeRotateAndShutdown(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pki := filepath.Join(dir, "pki")
	if err := run(context.Background(), []string{"--generate-tls", pki, "--san", "localhost,127.0.0.1", "--client-certs", node}, log); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca-key.pem", "server-key.pem", "client-" + node + "-key.pem"} {
		if fi, err := os.Stat(filepath.Join(pki, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	keyringPath := filepath.Join(dir, "state", "keyring.json")
	audit := filepath.Join(dir, "audit.jsonl")
	deny := filepath.Join(dir, "deny")
	os.WriteFile(deny, nil, 0o644)
	grpcAddr, httpAddr := freePort(t), freePort(t)
	args := []string{
		"--listen", grpcAddr, "--http-listen", httpAddr, "--keyring", keyringPath,
		"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"),
		"--client-ca", filepath.Join(pki, "ca.pem"), "--require-client-cert", "--bind-node-to-cert",
		"--deny-list", deny, "--audit-log", audit, "--shutdown-grace", "2s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, log) }()

	cas, err := kms.LoadCAs(filepath.Join(pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kms.LoadClientCert(filepath.Join(pki, "client-"+node+".pem"), filepath.Join(pki, "client-"+node+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl := kms.New(kms.Options{RootCAs: cas, Certificates: []tls.Certificate{cert}, Attempts: 20, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	defer cl.Close()
	ep := "https://localhost:" + grpcAddr[strings.LastIndex(grpcAddr, ":")+1:]
	secret := []byte("0123456789abcdef0123456789abcdef")
	blob, err := cl.Seal(ctx, ep, node, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Unseal(ctx, ep, node, blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	if fi, err := os.Stat(keyringPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring created with %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// rotate adds key 2 to the file the server reads on SIGHUP.
	if err := run(context.Background(), []string{"rotate", "--keyring", keyringPath}, log); err != nil {
		t.Fatal(err)
	}
	r, err := keyring.Load(keyringPath)
	if err != nil || r.Len() != 2 || r.Newest() != 2 {
		t.Fatalf("after rotate: %v keys, newest %v, %v", r.Len(), r.Newest(), err)
	}

	cancel() // SIGTERM/SIGINT cancel this context in main
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not shut down")
	}
	b, _ := os.ReadFile(audit)
	if n := strings.Count(string(b), "\n"); n != 2 || bytes.Contains(b, secret) {
		t.Fatalf("audit log has %d lines (want 2) or holds the secret:\n%s", n, b)
	}
}

func TestRunRefusesUnsafeSetups(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	k := filepath.Join(dir, "k.json")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--keyring", k, "--listen", "127.0.0.1:0"}, "TLS needs --tls-cert"},
		{[]string{"--keyring", k, "--insecure-plaintext", "--client-ca", "x"}, "contradicts"},
		{[]string{"--keyring", k, "--insecure-plaintext", "--bind-node-to-cert", "--listen", "127.0.0.1:0"}, "needs --client-ca"},
		{[]string{"extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, log)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	if _, err := os.Stat(k); err == nil {
		t.Errorf("a refused setup created the keyring %s", k)
	}
	os.WriteFile(k, []byte(`{"version":1,"keys":[]}`), 0o644)
	if err := run(context.Background(), []string{"--keyring", k, "--insecure-plaintext"}, log); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable keyring: %v", err)
	}
}

// TestAwaitEndShutsDownWhenServeFails: when Serve fails (not a signal),
// the server is still shut down, so the audit records queued so far are
// written out and /healthz stops saying ok.
func TestAwaitEndShutsDownWhenServeFails(t *testing.T) {
	ring, err := keyring.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var audit bytes.Buffer
	srv, err := server.New(server.Config{Keyring: ring, Audit: &audit})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	errc <- errors.New("accept: too many open files")
	err = awaitEnd(context.Background(), srv, errc, time.Second, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "too many open files") {
		t.Errorf("awaitEnd = %v, want Serve's error", err)
	}
	rec := httptest.NewRecorder()
	srv.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Errorf("/healthz after Serve failed = %d %q, want 503 shutting down: the server was not shut down", rec.Code, rec.Body.String())
	}
}
