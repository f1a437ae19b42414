package tpm

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestTrimAuthValue: only trailing zero bytes go, as the TPM drops them
// (go-tpm v0.9.8 cut at the first zero byte).
func TestTrimAuthValue(t *testing.T) {
	for _, tt := range []struct{ in, want []byte }{
		{nil, []byte{}},
		{[]byte{0, 0}, []byte{}},
		{[]byte{1, 2}, []byte{1, 2}},
		{[]byte{1, 0, 2}, []byte{1, 0, 2}},
		{[]byte{1, 0, 2, 0, 0}, []byte{1, 0, 2}},
		{[]byte{0, 1}, []byte{0, 1}},
	} {
		if got := trimAuthValue(tt.in); !bytes.Equal(got, tt.want) {
			t.Errorf("trimAuthValue(%x) = %x, want %x", tt.in, got, tt.want)
		}
	}
}

// TestSaltedPolicySessionValidate: a response whose HMAC was not made with
// the session key and the authValue is refused, so a forged response to
// the unseal is not taken for the TPM's.
func TestSaltedPolicySessionValidate(t *testing.T) {
	s := &saltedPolicySession{
		sessionKey:  bytes.Repeat([]byte{7}, 32),
		auth:        trimAuthValue([]byte{1, 0, 2, 0}),
		nonceCaller: tpm2.TPM2BNonce{Buffer: bytes.Repeat([]byte{1}, 16)},
		attrs:       tpm2.TPMASession{ContinueSession: true},
	}
	parms := []byte("response parameters")
	nonceTPM := tpm2.TPM2BNonce{Buffer: bytes.Repeat([]byte{2}, 16)}
	// the response HMAC as the TPM computes it: rpHash over rc || cc || parms
	rp := append([]byte{0, 0, 0, 0}, 0, 0, 1, 0x5e) // TPM_RC_SUCCESS, TPM_CC_Unseal
	h := sha256Sum(append(rp, parms...))
	good := s.hmac(h, nonceTPM.Buffer, s.nonceCaller.Buffer, nil, s.attrs)
	rsp := func(mac []byte) *tpm2.TPMSAuthResponse {
		return &tpm2.TPMSAuthResponse{Nonce: nonceTPM, Attributes: s.attrs, Authorization: tpm2.TPM2BData{Buffer: mac}}
	}
	if err := s.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCUnseal, parms, nil, 0, rsp(good)); err != nil {
		t.Fatalf("the right response HMAC: %v", err)
	}
	bad := bytes.Clone(good)
	bad[0] ^= 1
	if err := s.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCUnseal, parms, nil, 0, rsp(bad)); err == nil {
		t.Fatal("a forged response HMAC was accepted")
	}
	if err := s.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCUnseal, []byte("other parameters"), nil, 0, rsp(good)); err == nil {
		t.Fatal("changed response parameters were accepted")
	}
	// an authValue cut at its first zero (go-tpm v0.9.8) makes another HMAC
	cut := *s
	cut.auth = []byte{1}
	if bytes.Equal(cut.hmac(h, nonceTPM.Buffer, s.nonceCaller.Buffer, nil, s.attrs), good) {
		t.Fatal("the HMAC key ignores the authValue past its zero byte")
	}
}

// A refused response does not move the session's nonce on; a verified one
// that ends the session leaves no handle to flush.
func TestSaltedPolicySessionValidateState(t *testing.T) {
	s := &saltedPolicySession{
		handle:      0x03000000,
		sessionKey:  bytes.Repeat([]byte{7}, 32),
		nonceCaller: tpm2.TPM2BNonce{Buffer: bytes.Repeat([]byte{1}, 16)},
		nonceTPM:    tpm2.TPM2BNonce{Buffer: bytes.Repeat([]byte{9}, 16)},
	}
	parms := []byte("p")
	next := tpm2.TPM2BNonce{Buffer: bytes.Repeat([]byte{2}, 16)}
	h := sha256Sum(append([]byte{0, 0, 0, 0, 0, 0, 1, 0x5e}, parms...))
	ended := tpm2.TPMASession{} // ContinueSession clear: the TPM ends it
	if err := s.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCUnseal, parms, nil, 0,
		&tpm2.TPMSAuthResponse{Nonce: next, Attributes: ended, Authorization: tpm2.TPM2BData{Buffer: []byte("forged")}}); err == nil {
		t.Fatal("forged HMAC accepted")
	}
	if !bytes.Equal(s.nonceTPM.Buffer, bytes.Repeat([]byte{9}, 16)) || s.handle == tpm2.TPMRHNull {
		t.Fatalf("a refused response changed the session: nonce %x handle %v", s.nonceTPM.Buffer, s.handle)
	}
	good := s.hmac(h, next.Buffer, s.nonceCaller.Buffer, nil, ended)
	if err := s.Validate(tpm2.TPMRCSuccess, tpm2.TPMCCUnseal, parms, nil, 0,
		&tpm2.TPMSAuthResponse{Nonce: next, Attributes: ended, Authorization: tpm2.TPM2BData{Buffer: good}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.nonceTPM.Buffer, next.Buffer) || s.handle != tpm2.TPMRHNull {
		t.Fatalf("after a verified response that ends the session: nonce %x handle %v", s.nonceTPM.Buffer, s.handle)
	}
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// TestSessionAttrsByte: TPMA_SESSION's bits as go-tpm marshals them.
func TestSessionAttrsByte(t *testing.T) {
	for _, a := range []tpm2.TPMASession{
		{}, {ContinueSession: true}, {AuditExclusive: true}, {AuditReset: true},
		{Decrypt: true}, {Encrypt: true}, {Audit: true},
		{ContinueSession: true, Decrypt: true, Encrypt: true, Audit: true},
	} {
		if got, want := sessionAttrsByte(a), tpm2.Marshal(a); len(want) != 1 || got != want[0] {
			t.Errorf("%+v: %08b, go-tpm marshals %08b", a, got, want)
		}
	}
}
