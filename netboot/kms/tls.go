package kms

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// LoadCAs reads a PEM bundle of CA certificates, e.g. one shipped in the
// image or named on the kernel command line.
func LoadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kms CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("kms CA bundle %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// LoadClientCert reads a PEM client certificate and its key for mTLS.
func LoadClientCert(certPath, keyPath string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("kms client certificate %s: %w", certPath, err)
	}
	return c, nil
}
