package tpm

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// saltedPolicySession is a salted SHA-256 policy session whose
// authorization HMAC we compute ourselves, so that an authValue is used as
// the TPM uses it: only TRAILING zero bytes are dropped (TPM 2.0 Part 1,
// 19.6.5). go-tpm v0.9.8's session cuts the authValue at its FIRST zero
// byte (hmacKeyFromAuthValue; fixed upstream in google/go-tpm#446, not
// released), so a systemd PIN whose SHA-256 holds a zero byte inside
// (about one PIN in nine) would fail as a wrong PIN and cost a
// dictionary-attack strike on every try.
//
// The session is salted with the parent key, so the HMAC key (sessionKey ||
// authValue) cannot be attacked offline from a passive bus trace. Against an
// active interposer that holds only while the parent is pinned (a token's
// key_name or tpm2_srk): a systemd 252 token records no SRK, so an
// interposer answering CreatePrimary with its own key learns the salt and
// can test PINs offline. It carries no
// parameter encryption itself; the unseal adds a separate encryption
// session for that.
type saltedPolicySession struct {
	handle      tpm2.TPMHandle
	sessionKey  []byte
	auth        []byte // the authValue without its trailing zeros
	nonceCaller tpm2.TPM2BNonce
	nonceTPM    tpm2.TPM2BNonce
	attrs       tpm2.TPMASession
}

// startSaltedPolicySession starts the session; auth is the authValue the
// policy's PolicyAuthValue will require (nil when it has none). flushSess
// flushes the session.
func startSaltedPolicySession(t transport.TPM, parent *primaryKey, auth []byte) (s *saltedPolicySession, flushSess func() error, err error) {
	key, err := tpm2.ImportEncapsulationKey(&parent.pub)
	if err != nil {
		return nil, nil, fmt.Errorf("salt key: %w", err)
	}
	salt, encSalt, err := tpm2.CreateEncryptedSalt(rand.Reader, key)
	if err != nil {
		return nil, nil, fmt.Errorf("salt: %w", err)
	}
	defer clear(salt)
	s = &saltedPolicySession{
		auth:        trimAuthValue(auth),
		nonceCaller: tpm2.TPM2BNonce{Buffer: make([]byte, 16)},
		attrs:       tpm2.TPMASession{ContinueSession: true},
	}
	defer func(ps *saltedPolicySession) {
		if err != nil {
			clear(ps.auth) // a copy of the PIN's hash: never left behind
		}
	}(s)
	if _, err = rand.Read(s.nonceCaller.Buffer); err != nil {
		return nil, nil, err
	}
	rsp, err := tpm2.StartAuthSession{
		TPMKey:        parent.handle,
		Bind:          tpm2.TPMRHNull,
		NonceCaller:   s.nonceCaller,
		SessionType:   tpm2.TPMSEPolicy,
		Symmetric:     tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		AuthHash:      tpm2.TPMAlgSHA256,
		EncryptedSalt: tpm2.TPM2BEncryptedSecret{Buffer: encSalt},
	}.Execute(t)
	if err != nil {
		return nil, nil, err
	}
	s.handle = tpm2.TPMHandle(rsp.SessionHandle.HandleValue())
	s.nonceTPM = rsp.NonceTPM
	// Part 1, 19.6.8: sessionKey = KDFa(hash, bindAuth || salt, "ATH", nonceTPM, nonceCaller)
	s.sessionKey = tpm2.KDFa(crypto.SHA256, salt, "ATH", s.nonceTPM.Buffer, s.nonceCaller.Buffer, sha256.Size*8)
	flushSess = func() error {
		var err error
		if s.handle != tpm2.TPMRHNull {
			_, err = tpm2.FlushContext{FlushHandle: s.handle}.Execute(t)
		}
		clear(s.sessionKey)
		clear(s.auth)
		return err
	}
	return s, flushSess, nil
}

// trimAuthValue returns a copy of auth without its trailing zero bytes, as
// the TPM stores and uses an authValue (Part 1, 19.6.5, note 2); zero
// bytes inside stay.
func trimAuthValue(auth []byte) []byte {
	n := len(auth)
	for n > 0 && auth[n-1] == 0 {
		n--
	}
	return append([]byte(nil), auth[:n]...)
}

// hmac computes an authorization HMAC (Part 1, 19.6.5): key sessionKey ||
// authValue over pHash || nonceNewer || nonceOlder || addNonces || attrs.
func (s *saltedPolicySession) hmac(pHash, nonceNewer, nonceOlder, addNonces []byte, attrs tpm2.TPMASession) []byte {
	key := append(append([]byte(nil), s.sessionKey...), s.auth...)
	defer clear(key)
	mac := hmac.New(sha256.New, key)
	mac.Write(pHash)
	mac.Write(nonceNewer)
	mac.Write(nonceOlder)
	mac.Write(addNonces)
	mac.Write([]byte{sessionAttrsByte(attrs)})
	return mac.Sum(nil)
}

// sessionAttrsByte is TPMA_SESSION as the one byte the TPM hashes.
func sessionAttrsByte(a tpm2.TPMASession) byte {
	var b byte
	for bit, set := range [8]bool{a.ContinueSession, a.AuditExclusive, a.AuditReset, false, false, a.Decrypt, a.Encrypt, a.Audit} {
		if set {
			b |= 1 << bit
		}
	}
	return b
}

// Init does nothing: startSaltedPolicySession started the session.
func (s *saltedPolicySession) Init(transport.TPM) error { return nil }

// CleanupFailure does nothing: the session continues and close flushes it.
func (s *saltedPolicySession) CleanupFailure(transport.TPM) error { return nil }

// NonceTPM returns the TPM's last nonce for the session.
func (s *saltedPolicySession) NonceTPM() tpm2.TPM2BNonce { return s.nonceTPM }

// NewNonceCaller draws a fresh nonceCaller for the next command.
func (s *saltedPolicySession) NewNonceCaller() error {
	_, err := rand.Read(s.nonceCaller.Buffer)
	return err
}

// Authorize computes the command's authorization: cpHash = SHA-256(cc ||
// names || parms).
func (s *saltedPolicySession) Authorize(cc tpm2.TPMCC, parms, addNonces []byte, names []tpm2.TPM2BName, _ int) (*tpm2.TPMSAuthCommand, error) {
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint32(cc))
	for _, name := range names {
		h.Write(name.Buffer)
	}
	h.Write(parms)
	return &tpm2.TPMSAuthCommand{
		Handle:        s.handle,
		Nonce:         s.nonceCaller,
		Attributes:    s.attrs,
		Authorization: tpm2.TPM2BData{Buffer: s.hmac(h.Sum(nil), s.nonceCaller.Buffer, s.nonceTPM.Buffer, addNonces, s.attrs)},
	}, nil
}

// Validate checks the TPM's response HMAC: rpHash = SHA-256(rc || cc ||
// parms); it proves the response came from a TPM that knows the
// sessionKey and the authValue.
func (s *saltedPolicySession) Validate(rc tpm2.TPMRC, cc tpm2.TPMCC, parms []byte, _ []tpm2.TPM2BName, _ int, auth *tpm2.TPMSAuthResponse) error {
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint32(rc))
	_ = binary.Write(h, binary.BigEndian, uint32(cc))
	h.Write(parms)
	want := s.hmac(h.Sum(nil), auth.Nonce.Buffer, s.nonceCaller.Buffer, nil, auth.Attributes)
	if !hmac.Equal(want, auth.Authorization.Buffer) {
		return errors.New("incorrect response authorization HMAC from the TPM")
	}
	// only a verified response moves the session on
	s.nonceTPM = auth.Nonce
	if !auth.Attributes.ContinueSession {
		s.handle = tpm2.TPMRHNull // the TPM has ended the session: nothing to flush
	}
	return nil
}

// IsEncryption reports false: the session encrypts no parameter.
func (s *saltedPolicySession) IsEncryption() bool { return false }

// IsDecryption reports false: the session encrypts no parameter.
func (s *saltedPolicySession) IsDecryption() bool { return false }

// Encrypt does nothing (no parameter encryption).
func (s *saltedPolicySession) Encrypt([]byte) error { return nil }

// Decrypt does nothing (no parameter encryption).
func (s *saltedPolicySession) Decrypt([]byte) error { return nil }

// Handle returns the session's handle.
func (s *saltedPolicySession) Handle() tpm2.TPMHandle { return s.handle }

var _ tpm2.Session = (*saltedPolicySession)(nil)
