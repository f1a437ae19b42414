package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

const otherNode = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"

// startServer runs kms-server with a lab PKI (client certificate for node)
// and extra flags until the test ends. It returns the TLS endpoint, a
// client presenting node's certificate, the /healthz URL and the keyring.
func startServer(t *testing.T, extra ...string) (ep string, cl *kms.Client, healthz, keyringPath string) {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pki := filepath.Join(dir, "pki")
	if err := run(context.Background(), []string{"--generate-tls", pki, "--san", "localhost", "--client-certs", node}, log); err != nil {
		t.Fatal(err)
	}
	keyringPath = filepath.Join(dir, "keyring.json")
	grpcAddr, httpAddr := freePort(t), freePort(t)
	args := append([]string{
		"--listen", grpcAddr, "--http-listen", httpAddr, "--keyring", keyringPath, "--audit-log", "",
		"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"),
		"--client-ca", filepath.Join(pki, "ca.pem"),
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("kms-server: %v", err)
		}
	})
	cas, err := kms.LoadCAs(filepath.Join(pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kms.LoadClientCert(filepath.Join(pki, "client-"+node+".pem"), filepath.Join(pki, "client-"+node+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cl = kms.New(kms.Options{RootCAs: cas, Certificates: []tls.Certificate{cert}, Attempts: 20, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	t.Cleanup(cl.Close)
	ep = "https://localhost:" + grpcAddr[strings.LastIndex(grpcAddr, ":")+1:]
	// Wait until it serves: node's own seal works in every setup here.
	if _, err := cl.Seal(context.Background(), ep, node, []byte("warm-up")); err != nil {
		t.Fatal(err)
	}
	return ep, cl, "http://" + httpAddr + "/healthz", keyringPath
}

// With client certificates required, a certificate is bound to its node
// UUID by default: node's certificate cannot seal or unseal for another
// node. --unbound-client-certs is the explicit way out.
func TestRequireClientCertBindsNodeByDefault(t *testing.T) {
	ctx := context.Background()
	ep, cl, _, _ := startServer(t, "--require-client-cert")
	_, err := cl.Seal(ctx, ep, otherNode, []byte("k"))
	var st *kms.StatusError
	if !errors.As(err, &st) || st.Code != kms.PermissionDenied || !strings.Contains(err.Error(), "is not node") || strings.Contains(err.Error(), otherNode) {
		t.Fatalf("node %s's certificate sealing for %s: %v; want PermissionDenied", node, otherNode, err)
	}

	ep, cl, _, _ = startServer(t, "--require-client-cert", "--unbound-client-certs")
	if _, err := cl.Seal(ctx, ep, otherNode, []byte("k")); err != nil {
		t.Fatalf("--unbound-client-certs: %v", err)
	}
}

func TestRunRefusesContradictoryTLSFlags(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	k := filepath.Join(t.TempDir(), "k.json")
	base := []string{"--keyring", k, "--listen", "127.0.0.1:0", "--http-listen", ""}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--insecure-plaintext", "--require-client-cert"}, "--insecure-plaintext contradicts --require-client-cert"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--require-client-cert"}, "--require-client-cert needs --client-ca"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca", "--unbound-client-certs"}, "only with --require-client-cert"},
		{[]string{"--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca", "--require-client-cert", "--unbound-client-certs", "--bind-node-to-cert"}, "choose one"},
	}
	for _, tt := range tests {
		// A cancelled context: a server that starts anyway stops at once
		// and returns nil, which fails the check below.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := run(ctx, append(base, tt.args...), log)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	if _, err := os.Stat(k); err == nil {
		t.Errorf("a refused setup created the keyring %s", k)
	}
}

// kms-server rotate run as root keeps the keyring's owner and mode, so the
// server (another user) still reads it; /healthz turns 503 when the
// keyring cannot be read.
func TestRotateKeepsOwnerAndHealthzSeesBrokenKeyring(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, _, healthz, keyringPath := startServer(t)
	get := func() int {
		t.Helper()
		resp, err := http.Get(healthz)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("/healthz = %d at start", code)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = 4242, 4343
		if err := os.Chown(keyringPath, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(context.Background(), []string{"rotate", "--keyring", keyringPath}, log); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyringPath)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after rotate: owner %d:%d mode %v, want %d:%d 0600", st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
	}
	if code := get(); code != 200 {
		t.Fatalf("/healthz = %d after rotate", code)
	}
	os.Chmod(keyringPath, 0o640)
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz = %d with a keyring the server refuses to load, want 503", code)
	}
}
