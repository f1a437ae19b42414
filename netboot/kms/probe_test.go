package kms

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCA is a throwaway CA that issues server and client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "probe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert, key, pool}
}

func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ips ...net.IP) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// recordingProxy forwards TCP connections to target and records every byte
// that crosses it in either direction, as an on-path observer sees them.
type recordingProxy struct {
	addr string
	mu   sync.Mutex
	seen bytes.Buffer
	wg   sync.WaitGroup
}

func (p *recordingProxy) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen.Write(b)
}

// bytes waits for the connections to end and returns what crossed.
func (p *recordingProxy) bytes() []byte {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.seen.Bytes())
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	p := &recordingProxy{addr: lis.Addr().String()}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				io.Copy(io.MultiWriter(dst, p), src)
				dst.(*net.TCPConn).CloseWrite()
				src.(*net.TCPConn).CloseRead()
			}
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return p
}

// TestProbeNeverSendsClientCertInClear: the diagnostic handshake made after
// a failed TLS call (which an on-path attacker can cause with a reset) must
// not put the client certificate, which names the node UUID, on the wire in
// clear, even against a server that allows TLS 1.2, whether the server
// accepts the certificate or refuses it.
func TestProbeNeverSendsClientCertInClear(t *testing.T) {
	const nodeUUID = "5d3c4e2a-9b1f-4c7d-8e6a-2f0b1a9c7e34"
	serverCA, clientCA, otherCA := newTestCA(t), newTestCA(t), newTestCA(t)
	serverCert := serverCA.issue(t, "kms", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	for _, tc := range []struct {
		name    string
		issuer  *testCA
		refused bool
	}{
		{"accepted", clientCA, false},
		{"refused", otherCA, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
				Certificates: []tls.Certificate{serverCert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    clientCA.pool,
				MinVersion:   tls.VersionTLS12,
				NextProtos:   []string{"h2"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			go func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						if c.(*tls.Conn).Handshake() == nil {
							c.Write([]byte{0}) // as an HTTP/2 server sends its SETTINGS first
						}
					}()
				}
			}()
			proxy := newRecordingProxy(t, lis.Addr().String())
			clientCert := tc.issuer.issue(t, nodeUUID, x509.ExtKeyUsageClientAuth)
			c := New(Options{RootCAs: serverCA.pool, Certificates: []tls.Certificate{clientCert}, AttemptTimeout: 2 * time.Second})
			defer c.Close()
			ep, err := ParseEndpoint(proxy.addr)
			if err != nil {
				t.Fatal(err)
			}
			got := c.handshakeRefusal(context.Background(), ep, syscall.ECONNRESET)
			if tc.refused != errors.Is(got, ErrClientCertificate) {
				t.Errorf("probe = %v, want ErrClientCertificate: %v", got, tc.refused)
			}
			seen := proxy.bytes()
			if len(seen) == 0 {
				t.Fatal("the proxy saw no bytes: the probe did not go through it")
			}
			if bytes.Contains(seen, clientCert.Certificate[0]) {
				t.Error("the client certificate (DER) crossed the network in clear")
			}
			if bytes.Contains(seen, []byte(nodeUUID)) {
				t.Error("the node UUID (client certificate CN) crossed the network in clear")
			}
		})
	}
}

// TestClientCertOnlyOverTLS13: the call itself never sends a client
// certificate in TLS 1.2 either: against a server that speaks TLS 1.2 only
// the call fails at once, says to enable TLS 1.3, and the certificate does
// not cross the network.
func TestClientCertOnlyOverTLS13(t *testing.T) {
	const nodeUUID = "5d3c4e2a-9b1f-4c7d-8e6a-2f0b1a9c7e34"
	serverCA, clientCA := newTestCA(t), newTestCA(t)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCA.issue(t, "kms", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCA.pool,
		MaxVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	proxy := newRecordingProxy(t, lis.Addr().String())
	clientCert := clientCA.issue(t, nodeUUID, x509.ExtKeyUsageClientAuth)
	c := New(Options{RootCAs: serverCA.pool, Certificates: []tls.Certificate{clientCert}, Attempts: DefaultAttempts, AttemptTimeout: 2 * time.Second})
	defer c.Close()
	start := time.Now()
	_, err = c.Seal(context.Background(), proxy.addr, nodeUUID, []byte("secret"))
	if !errors.Is(err, ErrClientCertificate) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "does not speak TLS 1.3") {
		t.Errorf("against a TLS 1.2 server: %v, want ErrClientCertificate saying TLS 1.3", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: it was retried", d)
	}
	c.Close()
	seen := proxy.bytes()
	if bytes.Contains(seen, clientCert.Certificate[0]) || bytes.Contains(seen, []byte(nodeUUID)) {
		t.Error("the client certificate crossed the network in clear")
	}
}
