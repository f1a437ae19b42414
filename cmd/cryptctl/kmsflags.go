package main

import (
	"crypto/tls"
	"errors"

	"github.com/spf13/pflag"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// kmsFlags name the files a TLS KMS needs: the CA that signed its
// certificate, and for mTLS the client certificate and key.
type kmsFlags struct {
	ca, cert, key string
}

func (f *kmsFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.ca, "kms-ca", "", "PEM CA bundle that signed the KMS server certificate (default: the system roots, or SSL_CERT_FILE)")
	fl.StringVar(&f.cert, "kms-cert", "", "PEM client certificate for a KMS that requires one (mTLS); with --kms-key")
	fl.StringVar(&f.key, "kms-key", "", "PEM private key of --kms-cert")
}

// options builds the KMS client options from the flags.
func (f *kmsFlags) options() (kms.Options, error) {
	var opts kms.Options
	if f.ca != "" {
		pool, err := kms.LoadCAs(f.ca)
		if err != nil {
			return opts, err
		}
		opts.RootCAs = pool
		opts.RootCAsFrom = "--kms-ca " + f.ca
	}
	if (f.cert == "") != (f.key == "") {
		return opts, errors.New("--kms-cert and --kms-key go together: give both or neither")
	}
	if f.cert != "" {
		c, err := kms.LoadClientCert(f.cert, f.key)
		if err != nil {
			return opts, err
		}
		opts.Certificates = []tls.Certificate{c}
		opts.CertificatesFrom = "--kms-cert " + f.cert
	}
	return opts, nil
}
