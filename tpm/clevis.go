package tpm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ClevisToken is a LUKS2 token of type "clevis", written by clevis luks
// bind: {"type":"clevis","keyslots":["N"],"jwe":{...}}. The JWE (flattened
// JSON, or compact) encrypts the slot's passphrase; its protected header
// says which pin can decrypt it.
type ClevisToken struct {
	Keyslots []string
	JWE      *ClevisJWE
}

// ClevisJWE is a clevis JWE: alg "dir", enc A256GCM, the content key held
// by the pin (for tpm2: sealed in the TPM).
type ClevisJWE struct {
	protected  string // base64url of the header; also the GCM additional data
	iv         []byte
	ciphertext []byte
	tag        []byte
	Header     ClevisHeader
}

// ClevisHeader is the JWE protected header clevis writes.
type ClevisHeader struct {
	Alg    string `json:"alg"`
	Enc    string `json:"enc"`
	Clevis struct {
		Pin  string      `json:"pin"`
		TPM2 *ClevisTPM2 `json:"tpm2,omitempty"`
	} `json:"clevis"`
}

// ClevisTPM2 is the "tpm2" pin's configuration as clevis-encrypt-tpm2
// records it: the JWK is sealed in a keyed-hash object (jwk_pub, jwk_priv:
// base64url of the marshalled TPM2B_PUBLIC and TPM2B_PRIVATE) under a
// primary made by `tpm2_createprimary -C o -g hash -G key`, bound by
// PolicyPCR to pcr_ids of pcr_bank when pcr_ids is set.
type ClevisTPM2 struct {
	Hash    string       `json:"hash"`     // name algorithm of primary and object (default sha256)
	Key     string       `json:"key"`      // primary key type: "ecc" (default) or "rsa"
	JWKPub  string       `json:"jwk_pub"`  // base64url TPM2B_PUBLIC
	JWKPriv string       `json:"jwk_priv"` // base64url TPM2B_PRIVATE
	PCRBank string       `json:"pcr_bank,omitempty"`
	PCRIDs  ClevisPCRIDs `json:"pcr_ids,omitempty"` // "7" or "0,7" (or [0,7]); empty: no policy
	// PolicyPubkeyPath is set by clevis-pin-tpm2 (the Rust pin) for a
	// signed policy, which cryptinit does not support.
	PolicyPubkeyPath string `json:"policy_pubkey_path,omitempty"`
}

// BoundPCRs returns the PCRs the pin's policy binds (none when pcr_ids
// is empty: the object opens on any boot).
func (c *ClevisTPM2) BoundPCRs() ([]int, error) {
	if c.PCRIDs == "" {
		return nil, nil
	}
	return parsePCRIDs(string(c.PCRIDs))
}

// ClevisPCRIDs is clevis's pcr_ids: clevis-encrypt-tpm2 writes the string "0,7";
// a JSON list of numbers or strings is accepted too.
type ClevisPCRIDs string

// UnmarshalJSON accepts "0,7", [0,7] and ["0","7"].
func (p *ClevisPCRIDs) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = ClevisPCRIDs(s)
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("pcr_ids: want a string or a list: %w", err)
	}
	ids := make([]string, len(list))
	for i, v := range list {
		ids[i] = strings.Trim(string(v), `" `)
	}
	*p = ClevisPCRIDs(strings.Join(ids, ","))
	return nil
}

// ParseClevisToken decodes a clevis LUKS2 token and its JWE.
func ParseClevisToken(data []byte) (*ClevisToken, error) {
	var t struct {
		Type     string          `json:"type"`
		Keyslots []string        `json:"keyslots"`
		JWE      json.RawMessage `json:"jwe"`
	}
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("parse clevis token: %w", err)
	}
	if t.Type != "clevis" {
		return nil, fmt.Errorf("parse clevis token: type is %q", t.Type)
	}
	jwe, err := ParseClevisJWE(t.JWE)
	if err != nil {
		return nil, fmt.Errorf("parse clevis token: %w", err)
	}
	return &ClevisToken{Keyslots: t.Keyslots, JWE: jwe}, nil
}

// ClevisPinError is a clevis token for a pin cryptinit cannot open (tang,
// sss, ...); it is ErrClevisPinUnsupported, and names the pin.
type ClevisPinError struct{ Pin string }

func (e *ClevisPinError) Error() string {
	return fmt.Sprintf("%v: pin %q", ErrClevisPinUnsupported, e.Pin)
}

// Is makes errors.Is(err, ErrClevisPinUnsupported) hold.
func (e *ClevisPinError) Is(target error) bool { return target == ErrClevisPinUnsupported }

// ParseClevisJWE decodes a JWE in flattened JSON form (as clevis luks bind
// stores it), or a compact one as a JSON string or bare text (as clevis
// encrypt prints it). Only the tpm2 pin (ErrClevisPinUnsupported for
// others) with alg "dir" and enc A256GCM is accepted: that is all clevis's
// tpm2 pin writes.
func ParseClevisJWE(data []byte) (*ClevisJWE, error) {
	data = bytes.TrimSpace(data)
	var f struct {
		Protected    string `json:"protected"`
		EncryptedKey string `json:"encrypted_key"`
		IV           string `json:"iv"`
		Ciphertext   string `json:"ciphertext"`
		Tag          string `json:"tag"`
	}
	switch {
	case len(data) > 0 && data[0] == '{':
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("jwe: %w", err)
		}
	default:
		s := string(data)
		if len(data) > 0 && data[0] == '"' {
			if err := json.Unmarshal(data, &s); err != nil {
				return nil, fmt.Errorf("jwe: %w", err)
			}
		}
		parts := strings.Split(s, ".")
		if len(parts) != 5 {
			return nil, fmt.Errorf("jwe: compact form has %d parts, want 5", len(parts))
		}
		f.Protected, f.EncryptedKey, f.IV, f.Ciphertext, f.Tag = parts[0], parts[1], parts[2], parts[3], parts[4]
	}
	j := &ClevisJWE{protected: f.Protected}
	hdr, err := b64url(f.Protected)
	if err != nil {
		return nil, fmt.Errorf("jwe protected header: %w", err)
	}
	if err := json.Unmarshal(hdr, &j.Header); err != nil {
		return nil, fmt.Errorf("jwe protected header: %w", err)
	}
	// the pin first: a tang pin's JWE is ECDH-ES, an sss one's holds
	// shares; both are clevis's, unsupported here, never malformed
	if pin := j.Header.Clevis.Pin; pin != "tpm2" {
		return nil, fmt.Errorf("jwe: %w", &ClevisPinError{Pin: pin})
	}
	if j.Header.Alg != "dir" || j.Header.Enc != "A256GCM" {
		return nil, fmt.Errorf("jwe: alg %q enc %q, want dir and A256GCM (what clevis writes)", j.Header.Alg, j.Header.Enc)
	}
	if f.EncryptedKey != "" {
		return nil, errors.New("jwe: alg dir with an encrypted key")
	}
	for _, p := range []struct {
		name string
		in   string
		out  *[]byte
	}{{"iv", f.IV, &j.iv}, {"ciphertext", f.Ciphertext, &j.ciphertext}, {"tag", f.Tag, &j.tag}} {
		if *p.out, err = b64url(p.in); err != nil {
			return nil, fmt.Errorf("jwe %s: %w", p.name, err)
		}
	}
	if len(j.iv) != 12 || len(j.tag) != 16 {
		return nil, fmt.Errorf("jwe: iv of %d bytes and tag of %d, want 12 and 16 for A256GCM", len(j.iv), len(j.tag))
	}
	return j, nil
}

// b64url decodes base64url with or without padding.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// decrypt opens the JWE with the JWK's 256-bit key "k" (AES-256-GCM, the
// protected header's base64url text as additional data).
func (j *ClevisJWE) decrypt(jwk []byte) ([]byte, error) {
	var k struct {
		Kty string `json:"kty"`
		K   string `json:"k"`
	}
	if err := json.Unmarshal(jwk, &k); err != nil {
		return nil, fmt.Errorf("unsealed JWK: %w", err)
	}
	key, err := b64url(k.K)
	if err != nil || k.Kty != "oct" || len(key) != 32 {
		return nil, fmt.Errorf("unsealed JWK is not a 256-bit oct key")
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	ct := append(bytes.Clone(j.ciphertext), j.tag...)
	out, err := gcm.Open(nil, j.iv, ct, []byte(j.protected))
	if err != nil {
		return nil, errors.New("jwe: A256GCM authentication failed (JWE altered, or the TPM unsealed another key)")
	}
	return out, nil
}

// UnsealClevis decrypts a clevis tpm2 pin's JWE with this TPM and returns
// the plaintext: for a clevis LUKS2 token, the slot's passphrase. Zero the
// result after use. Pins other than tpm2 (tang, sss) are refused.
func (s *Sealer) UnsealClevis(ctx context.Context, tok *ClevisToken) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.unsealClevis(ctx, tok.JWE)
	if err != nil {
		return nil, fmt.Errorf("unseal clevis token (keyslots %v): %w", tok.Keyslots, err)
	}
	return out, nil
}

func (s *Sealer) unsealClevis(ctx context.Context, j *ClevisJWE) ([]byte, error) {
	c := j.Header.Clevis
	switch {
	case c.Pin != "tpm2":
		return nil, &ClevisPinError{Pin: c.Pin}
	case c.TPM2 == nil:
		return nil, errors.New("clevis tpm2 pin without its tpm2 header")
	}
	cfg := c.TPM2
	if cfg.PolicyPubkeyPath != "" {
		return nil, errors.New("clevis tpm2 pin with a signed policy (policy_pubkey_path) is not supported by cryptinit; use another key slot")
	}
	nameAlg, err := clevisHashAlg(cfg.Hash, "sha256")
	if err != nil {
		return nil, fmt.Errorf("clevis tpm2 hash: %w", err)
	}
	var pcrs []int
	var bank tpm2.TPMAlgID
	if cfg.PCRIDs != "" {
		if pcrs, err = parsePCRIDs(string(cfg.PCRIDs)); err != nil {
			return nil, err
		}
		if bank, err = clevisHashAlg(cfg.PCRBank, "sha1"); err != nil {
			return nil, fmt.Errorf("clevis tpm2 pcr_bank: %w", err)
		}
	}
	pubBytes, err := b64url(cfg.JWKPub)
	if err != nil {
		return nil, fmt.Errorf("clevis tpm2 jwk_pub: %w", err)
	}
	privBytes, err := b64url(cfg.JWKPriv)
	if err != nil {
		return nil, fmt.Errorf("clevis tpm2 jwk_priv: %w", err)
	}
	priv, pub, err := parseBlob(privBytes, pubBytes)
	if err != nil {
		return nil, err
	}
	template, err := ClevisPrimary(cfg.Key, nameAlg)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	parent, err := createPrimary(s.TPM, template)
	if err != nil {
		return nil, err
	}
	defer flush(s.TPM, parent.handle)
	var jwk []byte
	for attempt := 1; ; attempt++ {
		jwk, err = unsealClevisOnce(s.TPM, parent, priv, pub, bank, pcrs)
		if err == nil || !errors.Is(err, tpm2.TPMRCPCRChanged) || attempt == pcrChangedRetries {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	defer clear(jwk)
	return j.decrypt(jwk)
}

// loadRetries is how often TPM2_Load is sent while the TPM answers
// TPM_RC_RETRY or TPM_RC_TESTING.
const loadRetries = 3

// loadError says what a TPM2_Load refusal means. TPM_RC_INTEGRITY: the
// private blob's integrity HMAC, keyed from the parent's seed, does not
// verify: another TPM (or this one cleared) sealed it, ErrDifferentTPM.
// Any other format-one code (TPM_RC_SIZE, TPM_RC_INSUFFICIENT, TPM_RC_VALUE,
// TPM_RC_BINDING, ...) refuses the blob's encoding: ErrMalformedBlob. A
// warning (TPM_RC_OBJECT_MEMORY, ...) or a transport error says neither.
func loadError(err error) error {
	var fmt1 tpm2.TPMFmt1Error
	switch {
	case errors.Is(err, tpm2.TPMRCIntegrity):
		return fmt.Errorf("%w (%w): %w", errLoad, ErrDifferentTPM, err)
	case errors.As(err, &fmt1):
		return fmt.Errorf("%w (%w): %w", errLoad, ErrMalformedBlob, err)
	}
	return fmt.Errorf("%w: %w", errLoad, err)
}

// unsealClevisOnce loads the sealed JWK under parent and unseals it: with
// a PolicyPCR(bank:pcrs) session when pcrs are bound, else with the empty
// user auth clevis gives an unbound object (userwithauth).
func unsealClevisOnce(t transport.TPM, parent *primaryKey, priv *tpm2.TPM2BPrivate, pub *tpm2.TPM2BPublic, bank tpm2.TPMAlgID, pcrs []int) ([]byte, error) {
	objPub, err := pub.Contents()
	if err != nil {
		return nil, fmt.Errorf("bad sealed public blob: %w", err)
	}
	var load *tpm2.LoadResponse
	for attempt := 1; ; attempt++ {
		load, err = tpm2.Load{
			ParentHandle: tpm2.AuthHandle{Handle: parent.handle, Name: parent.name, Auth: tpm2.PasswordAuth(nil)},
			InPrivate:    *priv,
			InPublic:     *pub,
		}.Execute(t)
		// TPM_RC_RETRY, TPM_RC_TESTING: the TPM asks for the command again
		// (a TPM still testing after startup); it says nothing of the blob
		if attempt == loadRetries || !(errors.Is(err, tpm2.TPMRCRetry) || errors.Is(err, tpm2.TPMRCTesting)) {
			break
		}
	}
	if err != nil {
		return nil, loadError(err)
	}
	defer flush(t, load.ObjectHandle)

	var auth tpm2.Session = tpm2.PasswordAuth(nil)
	if len(pcrs) > 0 {
		// the policy digest is in the object's name algorithm (clevis's
		// "hash": tpm2_createpolicy -g hash)
		sess, closeSess, err := tpm2.PolicySession(t, objPub.NameAlg, 16, tpm2.Salted(parent.handle, parent.pub))
		if err != nil {
			return nil, fmt.Errorf("start policy session: %w", err)
		}
		defer func() { _ = closeSess() }()
		sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: bank, PCRSelect: pcrSelect(pcrs)}}}
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
			return nil, fmt.Errorf("policy PCR %v: %w", pcrs, err)
		}
		got, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("get policy digest: %w", err)
		}
		if !bytes.Equal(got.PolicyDigest.Buffer, objPub.AuthPolicy.Buffer) {
			return nil, fmt.Errorf("clevis PCRs %v (%s bank) differ from sealing time%s: %w", pcrs, bankName(bank), pcrHints(pcrs), ErrPCRMismatch)
		}
		auth = sess
	}
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: auth},
	}.Execute(t, parent.session(tpm2.AESEncryption(128, tpm2.EncryptOut)))
	if err != nil {
		return nil, fmt.Errorf("unseal clevis object: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// pcrSelect is a 24-PCR selection bitmap.
func pcrSelect(pcrs []int) []byte {
	m := make([]byte, numPCRs/8)
	for _, p := range pcrs {
		m[p/8] |= 1 << (p % 8)
	}
	return m
}

func bankName(alg tpm2.TPMAlgID) string {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	}
	return "sha256"
}

// clevisHashAlg maps a tpm2-tools hash name to its algorithm.
func clevisHashAlg(name, def string) (tpm2.TPMAlgID, error) {
	if name == "" {
		name = def
	}
	switch strings.ToLower(name) {
	case "sha1":
		return tpm2.TPMAlgSHA1, nil
	case "sha256":
		return tpm2.TPMAlgSHA256, nil
	case "sha384":
		return tpm2.TPMAlgSHA384, nil
	case "sha512":
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("unknown hash %q", name)
}

// parsePCRIDs parses clevis's pcr_ids, "7" or "0,2,7".
func parsePCRIDs(s string) ([]int, error) {
	var pcrs []int
	for _, f := range strings.Split(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 0 || p >= numPCRs {
			return nil, fmt.Errorf("clevis tpm2 pcr_ids %q: bad PCR %q", s, f)
		}
		pcrs = append(pcrs, p)
	}
	return normalizePCRs(pcrs)
}

// ClevisPrimary is the primary key clevis-encrypt-tpm2 seals under:
// tpm2-tools' default template for `tpm2_createprimary -C o -g hash -G key`
// (restricted decrypt, AES-128-CFB, fixedTPM|fixedParent|
// sensitiveDataOrigin|userWithAuth, empty unique): systemd < 254's legacy
// primary with nameAlg hash.
func ClevisPrimary(key string, nameAlg tpm2.TPMAlgID) (tpm2.TPMTPublic, error) {
	var t tpm2.TPMTPublic
	switch key {
	case "", "ecc":
		t = SystemdLegacyPrimary(tpm2.TPMAlgECC)
	case "rsa":
		t = SystemdLegacyPrimary(tpm2.TPMAlgRSA)
	default:
		return t, fmt.Errorf("clevis tpm2 key %q: want ecc or rsa", key)
	}
	t.NameAlg = nameAlg
	return t, nil
}
