package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// SystemdToken is a LUKS2 token of type "systemd-tpm2", written by
// systemd-cryptenroll --tpm2-device. Only the fields needed to unseal are
// interpreted; pcrlock tokens, and PIN tokens with a salt (systemd ≥ 253),
// are refused.
type SystemdToken struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Blob       string   `json:"tpm2-blob"`        // base64(TPM2B_PRIVATE || TPM2B_PUBLIC)
	PCRs       []int    `json:"tpm2-pcrs"`        // hash-bound PCRs
	PCRBank    string   `json:"tpm2-pcr-bank"`    // "sha256" (absent on old tokens)
	PrimaryAlg string   `json:"tpm2-primary-alg"` // "ecc" or "rsa" (absent on old tokens)
	PolicyHash string   `json:"tpm2-policy-hash"` // hex authPolicy
	PIN        bool     `json:"tpm2-pin"`
	PubKey     string   `json:"tpm2_pubkey,omitempty"` // base64 of the PCR signing key PEM
	PubKeyPCRs []int    `json:"tpm2_pubkey_pcrs,omitempty"`
	Salt       string   `json:"tpm2_salt,omitempty"`
	SRK        string   `json:"tpm2_srk,omitempty"` // serialized ESYS_TR of the persistent SRK (systemd ≥ 254)
	PCRLock    bool     `json:"tpm2_pcrlock,omitempty"`
}

// ParseSystemdToken decodes the JSON of a systemd-tpm2 token.
func ParseSystemdToken(data []byte) (*SystemdToken, error) {
	var t SystemdToken
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("parse systemd-tpm2 token: %w", err)
	}
	if t.Type != "" && t.Type != "systemd-tpm2" {
		return nil, fmt.Errorf("parse systemd-tpm2 token: type is %q", t.Type)
	}
	if t.Blob == "" {
		return nil, errors.New("parse systemd-tpm2 token: no tpm2-blob")
	}
	return &t, nil
}

// systemdPersistentSRK is where systemd ≥ 254 keeps its SRK.
const systemdPersistentSRK tpm2.TPMHandle = 0x81000001

// UnsealSystemd unseals a systemd-tpm2 token and returns the LUKS passphrase:
// the standard base64 of the sealed secret, as systemd-cryptsetup passes it.
// The PCR signing key comes from the token (tpm2_pubkey), the signatures from
// s.Policy (systemd-stub's /.extra file). Zero the result after use.
// A token that needs a PIN (tpm2-pin) fails with ErrPINRequired: use
// UnsealSystemdPIN.
func (s *Sealer) UnsealSystemd(ctx context.Context, tok *SystemdToken) ([]byte, error) {
	return s.UnsealSystemdPIN(ctx, tok, nil)
}

// UnsealSystemdPIN is UnsealSystemd for a token enrolled with
// systemd-cryptenroll --tpm2-with-pin; pin is ignored for a token without
// one. A wrong PIN fails with ErrWrongPIN and counts against the TPM's
// dictionary-attack lockout (systemd's sealed objects are not noDA), so the
// PIN is sent only after the PCR policy is known to pass, and not at all when
// one more failure could lock the TPM out (ErrPINLockout).
func (s *Sealer) UnsealSystemdPIN(ctx context.Context, tok *SystemdToken, pin []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	secret, err := s.unsealSystemd(ctx, tok, pin)
	if err != nil {
		return nil, fmt.Errorf("unseal systemd-tpm2 token (keyslots %v): %w", tok.Keyslots, err)
	}
	pass := make([]byte, base64.StdEncoding.EncodedLen(len(secret)))
	base64.StdEncoding.Encode(pass, secret)
	clear(secret)
	return pass, nil
}

func (s *Sealer) unsealSystemd(ctx context.Context, tok *SystemdToken, pin []byte) ([]byte, error) {
	switch {
	case tok.PIN && tok.Salt != "":
		return nil, errors.New("token's TPM PIN is salted (systemd ≥ 253), which cryptinit does not support; use another key slot")
	case tok.PIN && pin == nil:
		return nil, ErrPINRequired
	case tok.PCRLock:
		return nil, errors.New("token uses a systemd-pcrlock policy, which cryptinit does not support")
	case tok.PCRBank != "" && tok.PCRBank != "sha256":
		return nil, fmt.Errorf("token is bound to the %s PCR bank; only sha256 is supported", tok.PCRBank)
	}
	blob, err := base64.StdEncoding.DecodeString(tok.Blob)
	if err != nil {
		return nil, fmt.Errorf("tpm2-blob: %w", err)
	}
	priv, pub, err := splitSystemdBlob(blob)
	if err != nil {
		return nil, err
	}
	if tok.PolicyHash != "" {
		want, err := hex.DecodeString(tok.PolicyHash)
		if err != nil {
			return nil, fmt.Errorf("tpm2-policy-hash: %w", err)
		}
		area, err := pub.Contents()
		if err != nil {
			return nil, fmt.Errorf("tpm2-blob public area: %w", err)
		}
		if !bytes.Equal(area.AuthPolicy.Buffer, want) {
			return nil, fmt.Errorf("tpm2-policy-hash %s does not match the blob's policy %x", tok.PolicyHash, area.AuthPolicy.Buffer)
		}
	}
	req := unsealRequest{private: priv, public: pub, pcrs: tok.PCRs, pubKeyPCRs: tok.PubKeyPCRs}
	if tok.PIN {
		auth := SystemdPINAuth(pin)
		req.authValue = auth[:]
		defer clear(auth[:])
	}
	if tok.PubKey != "" {
		pemKey, err := base64.StdEncoding.DecodeString(tok.PubKey)
		if err != nil {
			return nil, fmt.Errorf("tpm2_pubkey: %w", err)
		}
		if req.signingKey, err = ParsePublicKeyPEM(pemKey); err != nil {
			return nil, fmt.Errorf("tpm2_pubkey: %w", err)
		}
		if len(req.pubKeyPCRs) == 0 {
			req.pubKeyPCRs = []int{UKIPCR}
		}
		if req.sigs, err = s.Policy.Signatures(); err != nil {
			return nil, err
		}
	}

	var srkName []byte
	if tok.SRK != "" {
		if srkName, err = systemdSRKName(tok.SRK); err != nil {
			return nil, err
		}
	}
	var errs []error
	for _, parent := range systemdParents(tok) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p, release, err := parent.get(s.TPM)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", parent.desc, err))
			continue
		}
		if srkName != nil {
			// the SRK the token names, before it salts or loads anything
			if err := p.pin(srkName); err != nil {
				release()
				errs = append(errs, fmt.Errorf("%s: %w", parent.desc, err))
				continue
			}
		}
		req.parent = p
		secret, err := unsealObject(ctx, s.TPM, req)
		release()
		if errors.Is(err, errLoad) {
			errs = append(errs, fmt.Errorf("%s: %w", parent.desc, err))
			continue // sealed under another parent key: try the next
		}
		return secret, err
	}
	return nil, fmt.Errorf("no parent key of this TPM loads the blob (%w): %w", ErrDifferentTPM, errors.Join(errs...))
}

// SystemdPINAuth is the authValue systemd 252 gives a sealed object for a
// TPM PIN: SHA-256 of the PIN as typed (tpm2-util.c hash_pin; systemd 253
// added a salt and PBKDF2, recorded in the token as tpm2_salt).
func SystemdPINAuth(pin []byte) [sha256.Size]byte {
	return sha256.Sum256(pin)
}

// systemdSRKName returns the marshalled TPM2B_NAME of the SRK a token's
// tpm2_srk names. tpm2_srk is the base64 of the SRK's ESYS_TR as tpm2-tss's
// Esys_TR_Serialize writes it: TPM handle (4 bytes), TPM2B_NAME, resource
// type (4 bytes), public area.
func systemdSRKName(srk string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(srk)
	if err != nil {
		return nil, fmt.Errorf("tpm2_srk: %w", err)
	}
	if len(raw) < 6 {
		return nil, errors.New("tpm2_srk: too short for a serialized ESYS_TR")
	}
	end := 6 + int(binary.BigEndian.Uint16(raw[4:6]))
	if end > len(raw) || end == 6 {
		return nil, errors.New("tpm2_srk: the serialized ESYS_TR holds no name")
	}
	return raw[4:end], nil
}

// splitSystemdBlob splits tpm2-blob into its TPM2B_PRIVATE and TPM2B_PUBLIC.
func splitSystemdBlob(blob []byte) (*tpm2.TPM2BPrivate, *tpm2.TPM2BPublic, error) {
	if len(blob) < 2 {
		return nil, nil, errors.New("tpm2-blob too short")
	}
	n := 2 + int(binary.BigEndian.Uint16(blob))
	if n > len(blob) {
		return nil, nil, errors.New("tpm2-blob: private part truncated")
	}
	return parseBlob(blob[:n], blob[n:])
}

// parentCandidate is a way to obtain the parent a systemd blob may be sealed under.
type parentCandidate struct {
	desc string
	get  func(t transport.TPM) (*primaryKey, func(), error)
}

func transientParent(desc string, template tpm2.TPMTPublic) parentCandidate {
	return parentCandidate{desc: desc, get: func(t transport.TPM) (*primaryKey, func(), error) {
		p, err := createPrimary(t, template)
		if err != nil {
			return nil, nil, err
		}
		return p, func() { flush(t, p.handle) }, nil
	}}
}

// systemdParents lists, most likely first, the parent keys a token's blob
// may be sealed under: systemd ≥ 254 (tpm2_srk set) uses the TCG SRK,
// persisted at 0x81000001; older systemd (Debian 12's 252) recreates its own
// primary from a template that lacks noDA and has an empty unique field.
func systemdParents(tok *SystemdToken) []parentCandidate {
	if tok.SRK != "" {
		return []parentCandidate{
			{desc: "persistent SRK 0x81000001", get: func(t transport.TPM) (*primaryKey, func(), error) {
				rsp, err := tpm2.ReadPublic{ObjectHandle: systemdPersistentSRK}.Execute(t)
				if err != nil {
					return nil, nil, err
				}
				pub, err := rsp.OutPublic.Contents()
				if err != nil {
					return nil, nil, err
				}
				name, err := tpm2.ObjectName(pub)
				if err != nil {
					return nil, nil, err
				}
				if !bytes.Equal(name.Buffer, rsp.Name.Buffer) {
					return nil, nil, fmt.Errorf("the TPM named it %x but returned a public area named %x: %w", rsp.Name.Buffer, name.Buffer, ErrSRKMismatch)
				}
				return &primaryKey{handle: systemdPersistentSRK, name: *name, pub: *pub}, func() {}, nil
			}},
			transientParent("TCG ECC SRK", tpm2.ECCSRKTemplate),
			transientParent("TCG RSA SRK", tpm2.RSASRKTemplate),
		}
	}
	switch tok.PrimaryAlg {
	case "ecc":
		return []parentCandidate{transientParent("systemd ECC primary", SystemdLegacyPrimary(tpm2.TPMAlgECC))}
	case "rsa":
		return []parentCandidate{transientParent("systemd RSA primary", SystemdLegacyPrimary(tpm2.TPMAlgRSA))}
	}
	return []parentCandidate{
		transientParent("systemd ECC primary", SystemdLegacyPrimary(tpm2.TPMAlgECC)),
		transientParent("systemd RSA primary", SystemdLegacyPrimary(tpm2.TPMAlgRSA)),
	}
}

// SystemdLegacyPrimary is the primary key template of systemd < 254
// (tpm2_make_primary): restricted decrypt, AES-128-CFB, userWithAuth, no
// noDA, empty unique; alg is TPMAlgECC (P-256) or TPMAlgRSA (2048).
func SystemdLegacyPrimary(alg tpm2.TPMAlgID) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		Decrypt:             true,
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	if alg == tpm2.TPMAlgRSA {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: sym, Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull}, KeyBits: 2048,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: sym,
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}
