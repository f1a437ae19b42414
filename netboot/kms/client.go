package kms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"
)

// Defaults for Options fields left zero.
const (
	DefaultAttemptTimeout = 10 * time.Second
	DefaultAttempts       = 5
	DefaultBackoff        = 500 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
)

// Options configures a Client. The CA bundle and client certificate come
// from the caller: from the image or a path on the kernel command line,
// never from STATE (STATE is what the KMS key opens).
type Options struct {
	// RootCAs verifies TLS endpoints. Nil means the system pool, which an
	// initramfs usually does not have: pass the bundle explicitly.
	RootCAs *x509.CertPool
	// Certificates are presented to a server that asks for a client
	// certificate (mTLS). With them the client speaks TLS 1.3 only, where
	// the certificate is encrypted.
	Certificates []tls.Certificate
	// AttemptTimeout bounds one call, connection included.
	AttemptTimeout time.Duration
	// Attempts is how many calls are made before giving up.
	Attempts int
	// Backoff is the wait after the first failed attempt; it doubles up to
	// MaxBackoff, with up to 20% jitter so that a rack of nodes spreads out.
	Backoff, MaxBackoff time.Duration
	// Logf, if set, is told about every failed attempt.
	Logf func(format string, args ...any)
	// RootCAsFrom and CertificatesFrom say where RootCAs and Certificates
	// came from ("--kms-ca ca.pem", an image path), so that a certificate
	// failure names the file to fix.
	RootCAsFrom, CertificatesFrom string
}

// Client calls a sidero.kms.KMSService over gRPC. It satisfies the KMS
// interface of unlock/keys. It is safe for concurrent use.
type Client struct {
	opts Options
	// tlsTransport serves TLS endpoints, plain grpc:// ones. Two pools, not
	// one transport doing both: net/http's HTTP/2 pool keys connections by
	// host:port alone, so one transport would send an https:// request down
	// a plaintext connection already open to the same address.
	tlsTransport, plain *http.Transport
}

// New returns a Client with opts, defaults filled in.
func New(opts Options) *Client {
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.MaxBackoff < opts.Backoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.Backoff)
	}
	transport := func(tlsOnly bool) *http.Transport {
		protocols := new(http.Protocols)
		if tlsOnly {
			protocols.SetHTTP2(true)
		} else {
			protocols.SetUnencryptedHTTP2(true)
		}
		t := &http.Transport{
			Protocols: protocols,
			DialContext: (&net.Dialer{
				Timeout:   opts.AttemptTimeout,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2:      true,
			MaxResponseHeaderBytes: 64 << 10,
		}
		if tlsOnly {
			t.TLSClientConfig = &tls.Config{
				RootCAs:      opts.RootCAs,
				Certificates: opts.Certificates,
				MinVersion:   tls.VersionTLS12,
			}
			if len(opts.Certificates) > 0 {
				// In TLS 1.2 the client certificate, which names the
				// node UUID (nodeID key material), crosses in clear.
				t.TLSClientConfig.MinVersion = tls.VersionTLS13
			}
			t.TLSHandshakeTimeout = opts.AttemptTimeout
		}
		return t
	}
	return &Client{opts: opts, tlsTransport: transport(true), plain: transport(false)}
}

// transport is the connection pool for ep: TLS and plaintext never share.
func (c *Client) transport(ep Endpoint) *http.Transport {
	if ep.TLS {
		return c.tlsTransport
	}
	return c.plain
}

// Close drops idle connections.
func (c *Client) Close() {
	c.tlsTransport.CloseIdleConnections()
	c.plain.CloseIdleConnections()
}

// Seal asks the KMS at endpoint to seal data for nodeUUID and returns the
// sealed blob (what Talos stores in the sideroKMS token).
func (c *Client) Seal(ctx context.Context, endpoint, nodeUUID string, data []byte) ([]byte, error) {
	return c.call(ctx, "seal", MethodSeal, endpoint, nodeUUID, data)
}

// Unseal asks the KMS at endpoint to open a blob sealed for nodeUUID. The
// caller owns the result and should zero it after use.
func (c *Client) Unseal(ctx context.Context, endpoint, nodeUUID string, sealed []byte) ([]byte, error) {
	return c.call(ctx, "unseal", MethodUnseal, endpoint, nodeUUID, sealed)
}

func (c *Client) call(ctx context.Context, op, method, endpoint, nodeUUID string, data []byte) ([]byte, error) {
	ep, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	req := (&Request{NodeUUID: nodeUUID, Data: data}).Marshal()
	defer clear(req)

	var last error
	wait := c.opts.Backoff
	attempt := 0
	for attempt = 1; attempt <= c.opts.Attempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		msg, err := c.unary(actx, ep, method, req, c.opts.AttemptTimeout)
		cancel()
		if err == nil {
			var resp Response
			uerr := resp.Unmarshal(msg)
			clear(msg)
			if uerr != nil {
				return nil, fmt.Errorf("kms %s at %s: %w", op, ep, uerr)
			}
			return resp.Data, nil
		}
		var st *StatusError
		if errors.As(err, &st) {
			// kms-server names the node (and the certificate's) in
			// some refusals; a node UUID is nodeID key material and
			// stays out of our errors.
			st.Message = redactUUIDs(st.Message, nodeUUID)
		}
		last = err
		perm := permanentFailure(ep, err, &c.opts)
		if perm == nil {
			perm = c.handshakeRefusal(ctx, ep, err)
		}
		if perm != nil {
			return nil, fmt.Errorf("kms %s at %s: %w", op, ep, perm)
		}
		if errors.As(err, &st) && !st.retryable() {
			if errors.Is(st, ErrTooLarge) {
				return nil, fmt.Errorf("kms %s at %s: %w (%d bytes sent; the server's limits are kms-server --max-message and --max-data): %w", op, ep, ErrTooLarge, len(req), err)
			}
			return nil, fmt.Errorf("kms %s at %s: %w", op, ep, err)
		}
		if ctx.Err() != nil {
			break
		}
		if c.opts.Logf != nil {
			c.opts.Logf("kms %s at %s: attempt %d/%d failed: %v", op, ep, attempt, c.opts.Attempts, err)
		}
		if attempt == c.opts.Attempts {
			break
		}
		// A failed connection may be stuck half-open: start the next
		// attempt on a fresh one.
		c.transport(ep).CloseIdleConnections()
		d := wait + time.Duration(rand.Int64N(int64(wait)/5+1))
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		if ctx.Err() != nil {
			break
		}
		wait = min(2*wait, c.opts.MaxBackoff)
	}
	attempt = min(attempt, c.opts.Attempts)
	hint := plaintextHint(ep, last) + rateLimitHint(last)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("kms %s at %s: %w after %d attempt(s): %w (last failure: %v)%s", op, ep, ErrUnreachable, attempt, ctx.Err(), last, hint)
	}
	return nil, fmt.Errorf("kms %s at %s: %w after %d attempt(s), last failure: %w%s", op, ep, ErrUnreachable, attempt, last, hint)
}

// redactUUIDs replaces node, and anything shaped like a UUID, in a server's
// message.
func redactUUIDs(msg, node string) string {
	if node != "" {
		msg = strings.ReplaceAll(msg, node, "<node UUID>")
	}
	const shape = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
	b := []byte(msg)
	for i := 0; i+len(shape) <= len(b); i++ {
		j := 0
		for ; j < len(shape); j++ {
			c := b[i+j]
			if shape[j] == '-' && c != '-' || shape[j] == 'x' && !isHex(c) {
				break
			}
		}
		if j == len(shape) {
			b = append(b[:i], append([]byte("<UUID>"), b[i+len(shape):]...)...)
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// plaintextHint explains a failure on a scheme-less endpoint that reached a
// server but got no TLS session: cryptinit reads host:port as TLS where
// Talos reads it as plaintext, so a plaintext KMS needs grpc:// spelled out.
// Dial failures (refused, no route, DNS) and gRPC statuses get no hint.
func plaintextHint(ep Endpoint, err error) string {
	if !ep.NoScheme || err == nil {
		return ""
	}
	var st *StatusError
	var op *net.OpError
	if errors.As(err, &st) || (errors.As(err, &op) && op.Op == "dial") {
		return ""
	}
	return fmt.Sprintf("; the endpoint %s has no scheme, which means TLS (Talos reads it as plaintext): for a KMS that serves plaintext gRPC write grpc://%s in the config", ep.Address, ep.Address)
}
