package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkTLSHandshakeServerCPU prices the server's TLS choices: the CPU
// time of the server side of one TLS 1.3 handshake (its goroutine locked to
// a thread, CLOCK_THREAD_CPUTIME_ID), over an in-memory pipe. "default" is
// what kms-server does: Go's default key exchange, X25519MLKEM768, and an
// ECDSA P-256 certificate as --generate-tls makes; then each choice
// changed alone: X25519 only, an Ed25519 certificate, and a resumed
// session (a node cannot resume across a reboot; shown for the cost).
func BenchmarkTLSHandshakeServerCPU(b *testing.B) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		key    crypto.Signer
		curves []tls.CurveID
		resume bool
		noTix  bool
	}{
		{"default-X25519MLKEM768-ECDSA-P256", ecKey, nil, false, false},
		{"no-session-tickets", ecKey, nil, false, true},
		{"X25519-ECDSA-P256", ecKey, []tls.CurveID{tls.X25519}, false, false},
		{"X25519MLKEM768-Ed25519", edKey, nil, false, false},
		{"resumed-X25519MLKEM768", ecKey, nil, true, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cert, pool := selfSigned(b, bc.key)
			scfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, CurvePreferences: bc.curves, SessionTicketsDisabled: bc.noTix}
			ccfg := &tls.Config{RootCAs: pool, ServerName: "kms.test", MinVersion: tls.VersionTLS12}
			if bc.resume {
				ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				handshake(b, scfg, ccfg) // the session to resume
			}
			var server time.Duration
			for b.Loop() {
				server += handshake(b, scfg, ccfg)
			}
			b.ReportMetric(float64(server.Nanoseconds())/1e3/float64(b.N), "server-us/handshake")
		})
	}
}

// handshake runs one TLS handshake over a pipe and returns the server
// side's thread CPU time. The client reads one byte so that the server's
// session ticket (sent after the handshake) is taken in.
func handshake(b *testing.B, scfg, ccfg *tls.Config) time.Duration {
	sc, cc := net.Pipe()
	done := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU(b)
		s := tls.Server(sc, scfg)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		d := threadCPU(b) - t0
		if err != nil {
			b.Error(err)
		}
		sc.Close() // not s.Close: its close_notify would wait on the pipe
		done <- d
	}()
	c := tls.Client(cc, ccfg)
	var one [1]byte
	if _, err := c.Read(one[:]); err != nil {
		b.Fatal(err)
	}
	cc.Close()
	return <-done
}

func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

func selfSigned(b *testing.B, key crypto.Signer) (tls.Certificate, *x509.CertPool) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kms.test"}, DNSNames: []string{"kms.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		b.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, pool
}
