package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// The node's client reads a bare host:port as TLS. Against this server in
// plaintext (--insecure-plaintext) it fails instead of sending the blob in
// clear, and its error names the endpoint and says to write grpc://.
func TestBareEndpointToPlaintextServer(t *testing.T) {
	_, ep := serve(t, Config{}, pki{}, "")
	bare := strings.TrimPrefix(ep, "grpc://")
	cl := kms.New(kms.Options{Attempts: 2, Backoff: 10 * time.Millisecond})
	defer cl.Close()
	ctx := context.Background()
	if _, err := cl.Seal(ctx, ep, nodeA, secret); err != nil {
		t.Fatalf("explicit grpc://: %v", err)
	}
	_, err := cl.Seal(ctx, bare, nodeA, secret)
	if err == nil {
		t.Fatalf("a bare endpoint sealed over plaintext")
	}
	if !errors.Is(err, kms.ErrUnreachable) {
		t.Errorf("err = %v, want ErrUnreachable", err)
	}
	for _, want := range []string{bare, "grpc://" + bare, "means TLS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
