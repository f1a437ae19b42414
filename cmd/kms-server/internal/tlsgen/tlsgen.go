// Package tlsgen writes a small lab PKI for the KMS: a CA, a server
// certificate for the given names, and optional client certificates whose
// CN (and urn:uuid: SAN) is a node UUID. Not for production CAs.
package tlsgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Options says what to generate.
type Options struct {
	// SANs of the server certificate: IP addresses or DNS names.
	SANs []string
	// Clients are the identities (usually node UUIDs) to issue client
	// certificates for.
	Clients []string
	// Validity of every certificate (default one year).
	Validity time.Duration
}

// Files written into the directory.
const (
	CACert     = "ca.pem"
	CAKey      = "ca-key.pem"
	ServerCert = "server.pem"
	ServerKey  = "server-key.pem"
)

// ClientFiles names the certificate and key of a client identity.
func ClientFiles(name string) (cert, key string) {
	return "client-" + name + ".pem", "client-" + name + "-key.pem"
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Generate writes the PKI into dir (created 0700). Keys are 0600.
func Generate(dir string, o Options) error {
	if o.Validity <= 0 {
		o.Validity = 365 * 24 * time.Hour
	}
	if len(o.SANs) == 0 {
		return fmt.Errorf("tls: the server certificate needs at least one name")
	}
	for _, c := range o.Clients {
		if c == "" || filepath.Base(c) != c {
			return fmt.Errorf("tls: client name %q cannot be a file name", c)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now().Add(-5 * time.Minute)
	ca, err := issue(nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "cryptinit KMS lab CA"},
		NotBefore:             now,
		NotAfter:              now.Add(o.Validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, dir, CACert, CAKey)
	if err != nil {
		return err
	}
	srv := &x509.Certificate{
		Subject:     pkix.Name{CommonName: o.SANs[0]},
		NotBefore:   now,
		NotAfter:    now.Add(o.Validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range o.SANs {
		if ip := net.ParseIP(n); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, n)
		}
	}
	if _, err := issue(ca, srv, dir, ServerCert, ServerKey); err != nil {
		return err
	}
	for _, name := range o.Clients {
		c := &x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			NotBefore:   now,
			NotAfter:    now.Add(o.Validity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if u, err := url.Parse("urn:uuid:" + name); err == nil {
			c.URIs = []*url.URL{u}
		}
		certFile, keyFile := ClientFiles(name)
		if _, err := issue(ca, c, dir, certFile, keyFile); err != nil {
			return err
		}
	}
	return nil
}

// issue signs tmpl with parent (self-signed when parent is nil) and writes
// the certificate and its key.
func issue(parent *issuer, tmpl *x509.Certificate, dir, certFile, keyFile string) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("tls: sign %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	return &issuer{cert: cert, key: key}, nil
}
