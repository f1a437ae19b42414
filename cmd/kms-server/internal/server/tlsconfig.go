package server

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// CertReloader serves a certificate that Reload can replace without a
// restart (renewed lab or ACME certificates).
type CertReloader struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// NewCertReloader loads the key pair once.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile}
	return r, r.Reload()
}

// Reload re-reads the key pair; on error the old one stays.
func (r *CertReloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("server certificate %s: %w", r.certFile, err)
	}
	r.cert.Store(&c)
	return nil
}

func (r *CertReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// TLSConfig builds the server TLS config. With clientCAFile, client
// certificates are verified against it: required when requireClientCert,
// else checked when presented.
func TLSConfig(certs *CertReloader, clientCAFile string, requireClientCert bool) (*tls.Config, error) {
	cfg := &tls.Config{
		GetCertificate: certs.get,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2"},
	}
	if clientCAFile == "" {
		if requireClientCert {
			return nil, fmt.Errorf("requiring client certificates needs a client CA file")
		}
		return cfg, nil
	}
	pool, err := kms.LoadCAs(clientCAFile) // the same PEM bundle reader the nodes use
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
