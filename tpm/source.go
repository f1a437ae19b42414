package tpm

import (
	"crypto/rsa"
	"fmt"
	"os"
)

// Where systemd-stub exposes the UKI's .pcrpkey and .pcrsig sections to the
// initrd.
const (
	StubPublicKeyPath = "/.extra/tpm2-pcr-public-key.pem"
	StubSignaturePath = "/.extra/tpm2-pcr-signature.json"
)

// PolicySource supplies the PCR signing public key and the signed PCR 11
// policies. Seal needs only the key; Unseal needs both.
type PolicySource interface {
	PublicKey() (*rsa.PublicKey, error)
	Signatures() (Signatures, error)
}

// FileSource reads the key and signatures from files, by default where
// systemd-stub puts them (see StubSource).
type FileSource struct {
	PublicKeyPath string
	SignaturePath string
}

// StubSource returns the FileSource for systemd-stub's /.extra files.
func StubSource() FileSource {
	return FileSource{PublicKeyPath: StubPublicKeyPath, SignaturePath: StubSignaturePath}
}

// PublicKey reads and parses the PEM public key.
func (f FileSource) PublicKey() (*rsa.PublicKey, error) {
	data, err := os.ReadFile(f.PublicKeyPath)
	if err != nil {
		return nil, fmt.Errorf("PCR public key (is this a signed UKI with a .pcrpkey section?): %w", err)
	}
	k, err := ParsePublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.PublicKeyPath, err)
	}
	return k, nil
}

// Signatures reads and parses the signature JSON.
func (f FileSource) Signatures() (Signatures, error) {
	data, err := os.ReadFile(f.SignaturePath)
	if err != nil {
		return nil, fmt.Errorf("PCR signatures (is this a UKI with a .pcrsig section?): %w", err)
	}
	s, err := ParseSignatures(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.SignaturePath, err)
	}
	return s, nil
}

// StaticSource is a PolicySource held in memory (tests, configured keys).
type StaticSource struct {
	Key  *rsa.PublicKey
	Sigs Signatures
}

// PublicKey returns s.Key.
func (s StaticSource) PublicKey() (*rsa.PublicKey, error) {
	if s.Key == nil {
		return nil, fmt.Errorf("no PCR public key configured")
	}
	return s.Key, nil
}

// Signatures returns s.Sigs.
func (s StaticSource) Signatures() (Signatures, error) { return s.Sigs, nil }
