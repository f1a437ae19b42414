package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// fast is how long a failure that retrying cannot fix may take to report;
// with the default five attempts and backoff a retried one takes ~8 s.
const fast = time.Second

// timed runs f and fails the test when it takes longer than fast.
func timed(t *testing.T, what string, f func() error) error {
	t.Helper()
	start := time.Now()
	err := f()
	if d := time.Since(start); d > fast {
		t.Errorf("%s took %v to report (%v), want under %v: it was retried", what, d, err, fast)
	}
	return err
}

// TestClientUnknownCAFailsFast: a server certificate from another CA is
// reported at once, naming the CA bundle to fix, not after every retry.
func TestClientUnknownCAFailsFast(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	_, ep := serve(t, Config{}, p, "tls")
	cl := other.client(t, "", kms.Options{Attempts: kms.DefaultAttempts, RootCAsFrom: "--kms-ca other-ca.pem"})
	err := timed(t, "unknown CA", func() error {
		_, err := cl.Seal(context.Background(), ep, nodeA, secret)
		return err
	})
	if !errors.Is(err, kms.ErrServerCertificate) || errors.Is(err, kms.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrServerCertificate and not ErrUnreachable", err)
	}
	if !strings.Contains(err.Error(), "is not signed by the CA in --kms-ca other-ca.pem") {
		t.Fatalf("error does not say which CA bundle to fix: %v", err)
	}
	// no CA bundle at all: the system roots, which do not hold the lab CA
	sys := kms.New(kms.Options{})
	defer sys.Close()
	err = timed(t, "system roots", func() error { _, err := sys.Seal(context.Background(), ep, nodeA, secret); return err })
	if !errors.Is(err, kms.ErrServerCertificate) || !strings.Contains(err.Error(), "not signed by any CA in the system roots (no CA bundle given") {
		t.Fatalf("without a CA bundle: %v", err)
	}
}

// TestClientMTLSRefusedFast: a server that requires client certificates
// refuses a client without one, or with one of another CA, at once and
// says so.
func TestClientMTLSRefusedFast(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	_, ep := serve(t, Config{}, p, "mtls-required")
	ctx := context.Background()
	noCert := p.client(t, "", kms.Options{Attempts: kms.DefaultAttempts})
	err := timed(t, "no client certificate", func() error { _, err := noCert.Seal(ctx, ep, nodeA, secret); return err })
	if !errors.Is(err, kms.ErrClientCertificate) || !strings.Contains(err.Error(), "no client certificate was given (cryptctl: --kms-cert FILE --kms-key FILE)") {
		t.Fatalf("without a client certificate: %v", err)
	}
	// a certificate of another CA, with the server's CA trusted
	c, k := other.path("client-"+nodeA+".pem"), other.path("client-"+nodeA+"-key.pem")
	cert, err := kms.LoadClientCert(c, k)
	if err != nil {
		t.Fatal(err)
	}
	foreign := p.client(t, "", kms.Options{Attempts: kms.DefaultAttempts, CertificatesFrom: "--kms-cert " + c})
	foreign.Close()
	opts := kms.Options{Attempts: kms.DefaultAttempts, CertificatesFrom: "--kms-cert " + c}
	opts.RootCAs, _ = kms.LoadCAs(p.path("ca.pem"))
	opts.Certificates = append(opts.Certificates, cert)
	cl := kms.New(opts)
	defer cl.Close()
	err = timed(t, "foreign client certificate", func() error { _, err := cl.Seal(ctx, ep, nodeA, secret); return err })
	if !errors.Is(err, kms.ErrClientCertificate) || !strings.Contains(err.Error(), "--kms-cert "+c+") is not signed by a CA the server trusts") {
		t.Fatalf("with a client certificate of another CA: %v", err)
	}
}

// TestClientTooLargeVsRateLimited: kms-server answers ResourceExhausted for
// its rate limiter and for sizes; the client reports the first as
// ErrRateLimited after retrying, the others as ErrTooLarge at once.
func TestClientTooLargeVsRateLimited(t *testing.T) {
	ctx := context.Background()
	_, ep := serve(t, Config{MaxMessage: 1024, MaxData: 64}, pki{}, "")
	cl := kms.New(kms.Options{})
	defer cl.Close()
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"secret over --max-data", func() error { _, err := cl.Seal(ctx, ep, nodeA, make([]byte, 65)); return err }},
		{"request over --max-message", func() error { _, err := cl.Unseal(ctx, ep, nodeA, make([]byte, 2048)); return err }},
	} {
		err := timed(t, tc.name, tc.call)
		if !errors.Is(err, kms.ErrTooLarge) || errors.Is(err, kms.ErrRateLimited) || !strings.Contains(err.Error(), "too large") {
			t.Errorf("%s: %v, want ErrTooLarge only", tc.name, err)
		}
	}

	_, ep = serve(t, Config{Rate: 0.001, Burst: 1}, pki{}, "")
	limited := kms.New(kms.Options{Attempts: 2, Backoff: 10 * time.Millisecond})
	defer limited.Close()
	if _, err := limited.Seal(ctx, ep, nodeA, secret); err != nil {
		t.Fatal(err)
	}
	_, err := limited.Seal(ctx, ep, nodeA, secret)
	if !errors.Is(err, kms.ErrRateLimited) || errors.Is(err, kms.ErrTooLarge) ||
		!strings.Contains(err.Error(), "after 2 attempt(s)") || !strings.Contains(err.Error(), "rate limited this client") {
		t.Fatalf("over the rate: %v, want ErrRateLimited after 2 attempts", err)
	}
}
