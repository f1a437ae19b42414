package tpm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// PCRSignature is one signed PCR policy, an entry of systemd's .pcrsig JSON.
type PCRSignature struct {
	PCRs []int  `json:"pcrs"` // PCRs the policy covers ([11])
	PKFP string `json:"pkfp"` // hex SHA-256 of the PKCS#1 DER public key
	Pol  string `json:"pol"`  // hex policy digest of PolicyPCR(pcrs = values)
	Sig  string `json:"sig"`  // base64 RSASSA-PKCS1-v1_5 signature over SHA-256(pol)
}

// Signatures is the .pcrsig JSON (/.extra/tpm2-pcr-signature.json): PCR
// signatures by bank name ("sha256"; other banks are kept but not used).
type Signatures map[string][]PCRSignature

// ParseSignatures decodes a .pcrsig JSON document.
func ParseSignatures(data []byte) (Signatures, error) {
	var s Signatures
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse PCR signature JSON: %w", err)
	}
	return s, nil
}

// Marshal encodes s as compact JSON, as systemd writes it.
func (s Signatures) Marshal() ([]byte, error) { return json.Marshal(s) }

// find returns the sha256 signature whose policy equals digest.
func (s Signatures) find(digest []byte) (PCRSignature, bool) {
	want := hex.EncodeToString(digest)
	for _, sig := range s["sha256"] {
		if sig.Pol == want {
			return sig, true
		}
	}
	return PCRSignature{}, false
}

// Fingerprint is the `pkfp` of a signing key: hex SHA-256 of its PKCS#1 DER.
func Fingerprint(k *rsa.PublicKey) string {
	sum := sha256.Sum256(x509.MarshalPKCS1PublicKey(k))
	return hex.EncodeToString(sum[:])
}

// SignPolicy signs the policy "PCRs pcrs hold values" (ascending PCR order)
// with key, as systemd-measure sign does: the policy digest is
// PolicyPCRDigest, signed RSASSA-PKCS1-v1_5 over its SHA-256.
func SignPolicy(key *rsa.PrivateKey, pcrs []int, values [][]byte) (PCRSignature, error) {
	pol, err := PolicyPCRDigest(pcrs, values)
	if err != nil {
		return PCRSignature{}, err
	}
	sum := sha256.Sum256(pol)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return PCRSignature{}, fmt.Errorf("sign PCR policy: %w", err)
	}
	return PCRSignature{
		PCRs: append([]int(nil), pcrs...),
		PKFP: Fingerprint(&key.PublicKey),
		Pol:  hex.EncodeToString(pol),
		Sig:  base64.StdEncoding.EncodeToString(sig),
	}, nil
}

// ParsePublicKeyPEM parses a PCR signing public key: PEM "PUBLIC KEY" (what
// .pcrpkey holds), "RSA PUBLIC KEY", a certificate, or bare DER
// SubjectPublicKeyInfo. Only RSA is supported.
func ParsePublicKeyPEM(data []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		// Be lenient with a bare DER SubjectPublicKeyInfo.
		block = &pem.Block{Type: "PUBLIC KEY", Bytes: data}
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = c.PublicKey
		}
	default:
		return nil, fmt.Errorf("PCR public key: unexpected PEM type %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("PCR public key: %w", err)
	}
	rk, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("PCR public key: %T is not RSA", key)
	}
	return rk, nil
}

// MarshalPublicKeyPEM encodes k as the PEM "PUBLIC KEY" (SubjectPublicKeyInfo)
// that systemd expects in .pcrpkey.
func MarshalPublicKeyPEM(k *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKeyPEM parses an RSA PCR signing key (PKCS#8 or PKCS#1 PEM).
func ParsePrivateKeyPEM(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("PCR signing key: no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PCR signing key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("PCR signing key: %T is not RSA", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("PCR signing key: unexpected PEM type %q", block.Type)
}
