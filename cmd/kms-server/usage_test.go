package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/boot"
)

func TestHelpExitsZeroAndListsCommands(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		var out bytes.Buffer
		if err := runTo(context.Background(), args, &out, log); err != nil {
			t.Errorf("%v: %v (main exits 1)", args, err)
		}
		for _, w := range []string{"rotate", "version", "--generate-tls", "-keyring"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v does not list %q:\n%s", args, w, out.String())
			}
		}
	}
	if err := runTo(context.Background(), []string{"rotate", "-h"}, io.Discard, log); err != nil {
		t.Errorf("rotate -h: %v", err)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := runTo(context.Background(), []string{"version"}, &out, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "kms-server version ") || !strings.Contains(s, "commit ") || !strings.Contains(s, runtime.Version()) {
		t.Errorf("version printed %q", s)
	}
}

// TestGenerateTLSPrintsNextSteps: the serve command printed after
// --generate-tls is accepted as printed, and the node-side paths are the
// ones the boot reads.
func TestGenerateTLSPrintsNextSteps(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pki := filepath.Join(t.TempDir(), "pki")
	var out bytes.Buffer
	if err := runTo(context.Background(), []string{"--generate-tls", pki, "--san", "kms.lab", "--client-certs", node}, &out, log); err != nil {
		t.Fatal(err)
	}
	var serveLine string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "kms-server ") {
			serveLine = l
		}
	}
	if serveLine == "" {
		t.Fatalf("no kms-server command printed:\n%s", out.String())
	}
	o, err := parseOptions(strings.Fields(serveLine)[1:])
	if err != nil {
		t.Fatalf("printed command %q: %v", serveLine, err)
	}
	if _, _, err := o.tls(log); err != nil || !o.requireCert || !o.bindNodeToCert() {
		t.Errorf("printed command %q: tls %v, requires certs %v, binds node %v", serveLine, err, o.requireCert, o.bindNodeToCert())
	}
	for _, w := range []string{
		filepath.Join(pki, "ca.pem") + " <image root>" + boot.KMSCAFile,
		filepath.Join(pki, "client-"+node+".pem") + " <image root>" + boot.KMSClientCertFile,
		filepath.Join(pki, "client-"+node+"-key.pem") + " <image root>" + boot.KMSClientKeyFile,
		"https://kms.lab:4050",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("next steps lack %q:\n%s", w, out.String())
		}
	}
}
