package kms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Sentinel errors for failures that retrying cannot fix, or that need their
// own advice.
var (
	// ErrServerCertificate: the KMS server's certificate does not verify
	// (unknown CA, other name, expired). Not retried: the fix is a file.
	ErrServerCertificate = errors.New("kms server certificate not trusted")
	// ErrClientCertificate: the server wants a (valid) client certificate
	// and did not get one. Not retried.
	ErrClientCertificate = errors.New("kms server refused the TLS handshake: it requires a valid client certificate")
	// ErrRateLimited: the server's rate limiter refused the request
	// (ResourceExhausted). Retried with backoff; persisting means this
	// client calls too often for the server's --rate/--burst.
	ErrRateLimited = errors.New("kms rate limited this client")
	// ErrTooLarge: a message exceeded a size limit (the server's
	// --max-message or --max-data, or the client's response bound). Not
	// retried: the same request is as large the next time.
	ErrTooLarge = errors.New("kms message too large")
)

// resourceTooLarge reports whether a ResourceExhausted status is about a
// message or data size rather than a rate. Only the exact messages of
// kms-server ("data to seal is N bytes, at most M allowed"), grpc-go
// (rpc_util.go, stream.go) and this client (transport.go) count: any other
// ResourceExhausted is a rate limit and is retried.
func resourceTooLarge(msg string) bool {
	for _, prefix := range []string{
		"grpc: received message larger than max ",
		"grpc: received message after decompression larger than max ",
		"grpc: message after decompression larger than max ",
		"trying to send message larger than max ",
		"response is larger than ",
	} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	var n, m int
	var rest string
	k, _ := fmt.Sscanf(msg, "data to seal is %d bytes, at most %d %s", &n, &m, &rest)
	return k == 3 && rest == "allowed"
}

// permanentFailure turns a transport error that no retry can fix into a
// clear error, or returns nil when err may be transient. cas and cert name
// where the client's CA bundle and certificate came from, for the advice.
func permanentFailure(ep Endpoint, err error, o *Options) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	cas := o.RootCAsFrom
	if cas == "" {
		if o.RootCAs != nil {
			cas = "the CA bundle given"
		} else {
			cas = "any CA in the system roots (no CA bundle given: name the CA that signed it, cryptctl --kms-ca FILE)"
		}
	} else {
		cas = "the CA in " + cas
	}
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: the server certificate of %s is not signed by %s; fix the CA bundle, or the server's certificate (%v)", ErrServerCertificate, ep.Address, cas, err)
	case errors.As(err, &host):
		return fmt.Errorf("%w: the server certificate is for other names than %q (%v); use a name the certificate holds in the endpoint, or reissue the certificate", ErrServerCertificate, ep.Host(), err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w: the server certificate of %s is not valid: %v", ErrServerCertificate, ep.Address, err)
	case errors.As(err, &verify):
		return fmt.Errorf("%w: the server certificate of %s does not verify against %s: %v", ErrServerCertificate, ep.Address, cas, err)
	}
	msg := err.Error()
	if len(o.Certificates) > 0 && strings.Contains(msg, "tls: protocol version not supported") {
		return fmt.Errorf("%w: %s does not speak TLS 1.3, and a client certificate (it names the node) is sent over TLS 1.3 only, where it is encrypted: enable TLS 1.3 on the KMS server (%v)", ErrClientCertificate, ep.Address, err)
	}
	// A TLS alert from the server during the handshake: the client
	// certificate is missing or not one the server's client CA signed.
	for _, alert := range []string{"tls: certificate required", "tls: bad certificate", "tls: unknown certificate authority", "tls: certificate unknown"} {
		if strings.Contains(msg, "remote error: "+alert) {
			return clientCertRefused(ep, o, alert)
		}
	}
	return nil
}

// clientCertRefused says what is wrong with our side of mTLS.
func clientCertRefused(ep Endpoint, o *Options, alert string) error {
	where := o.CertificatesFrom
	if where == "" {
		where = "cryptctl: --kms-cert FILE --kms-key FILE"
	}
	have := "no client certificate was given (" + where + ")"
	if len(o.Certificates) > 0 {
		have = "the client certificate given"
		if o.CertificatesFrom != "" {
			have += " (" + o.CertificatesFrom + ")"
		}
		have += " is not signed by a CA the server trusts (its --client-ca)"
	}
	return fmt.Errorf("%w: %s: %s: %s", ErrClientCertificate, ep.Address, have, alert)
}

// rateLimitHint advises on a rate limit that outlasted every attempt.
func rateLimitHint(err error) string {
	if err == nil || !errors.Is(err, ErrRateLimited) {
		return ""
	}
	return "; " + ErrRateLimited.Error() + ": the server's rate limit (kms-server --rate, --burst) refused every attempt: retry later, or raise the limit for this client"
}

// probeTimeout bounds the diagnostic handshake of handshakeRefusal.
const probeTimeout = 2 * time.Second

// handshakeRefusal tells a server that refused our client certificate from
// a broken connection. Under TLS 1.3 the server checks the client
// certificate after the client's handshake is done, so its alert races our
// request: the call may fail with a broken pipe or a reset instead. So when
// a TLS call failed on an open connection, a probe handshake with the same
// certificates is made and nothing is written on it: a read waits for the
// server's verdict (its alert, or its first HTTP/2 frame when it accepted).
// The probe is TLS 1.3 only: in TLS 1.2 the client Certificate message, and
// with it the node UUID the KMS binds certificates to, crosses the network
// in clear, and an on-path attacker could trigger the probe with a reset.
// It returns the permanent failure, or nil.
func (c *Client) handshakeRefusal(ctx context.Context, ep Endpoint, err error) error {
	var st *StatusError
	var op *net.OpError
	var ne net.Error
	if !ep.TLS || ctx.Err() != nil || errors.As(err, &st) || (errors.As(err, &op) && op.Op == "dial") ||
		(errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	cfg := c.tlsTransport.TLSClientConfig.Clone()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	cfg.NextProtos = []string{"h2"}
	cfg.ServerName = ep.Host()
	pctx, cancel := context.WithTimeout(ctx, min(probeTimeout, c.opts.AttemptTimeout))
	defer cancel()
	conn, perr := (&tls.Dialer{Config: cfg}).DialContext(pctx, "tcp", ep.Address)
	if perr == nil {
		defer conn.Close()
		deadline, _ := pctx.Deadline()
		conn.SetReadDeadline(deadline)
		_, perr = conn.Read(make([]byte, 1))
		if perr == nil {
			return nil // the server accepted us and spoke first
		}
	}
	return permanentFailure(ep, perr, &c.opts)
}
