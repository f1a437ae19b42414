package keys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
)

// TestTPMSealedStateChanged checks that only a PCR mismatch of a key bound
// to PCR 7 alone is reported as ErrSealedStateChanged, always together with
// ErrKeyUnavailable for callers that know only that one.
func TestTPMSealedStateChanged(t *testing.T) {
	ctx := context.Background()
	mismatch := fmt.Errorf("unseal: PCRs [7] differ from sealing time: %w", tpm.ErrPCRMismatch)
	tests := []struct {
		name    string
		pcrs    []int
		fail    error
		changed bool
	}{
		{"PCR 7 changed", []int{7}, mismatch, true},
		{"PCR 7 named as changed, 15 bound", []int{7}, fmt.Errorf("unseal: %w", &tpm.PCRChangedError{Changed: []int{7}}), true},
		{"PCR 15 named as changed", []int{7}, fmt.Errorf("unseal: %w", &tpm.PCRChangedError{Changed: []int{15}}), false},
		{"PCR 7 and 15 named as changed", []int{7}, fmt.Errorf("unseal: %w", &tpm.PCRChangedError{Changed: []int{7, 15}}), false},
		{"PCR 7 and 15 bound, change unnamed: may be the latch", []int{7, 15}, mismatch, false},
		{"PCR 11 signature missing", []int{7}, fmt.Errorf("unseal: %w", tpm.ErrNoSignature), false},
		{"other TPM", []int{7}, fmt.Errorf("unseal: %w", tpm.ErrDifferentTPM), false},
		{"PCR never measured", []int{7}, fmt.Errorf("unseal: %w", tpm.ErrPCRUnset), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// a token bound to exactly tt.pcrs (Enroll always adds PCR 15;
			// tokens enrolled before that are bound to [7] alone)
			dev := &fakeTPM{fail: tt.fail}
			k := &TPMKey{TPM: dev}
			tok, err := encodeToken(TokenTPM, TokenFromSealed(&tpm.Sealed{Private: []byte("secret"), Public: []byte("pub"),
				PCRs: tt.pcrs, KeyName: []byte{3, 4}}, 3))
			if err != nil {
				t.Fatal(err)
			}
			_, err = k.Passphrase(ctx, Slot{Slot: 3, Token: tok})
			if !errors.Is(err, ErrKeyUnavailable) {
				t.Errorf("error %v is not ErrKeyUnavailable", err)
			}
			if got := errors.Is(err, ErrSealedStateChanged); got != tt.changed {
				t.Errorf("ErrSealedStateChanged = %v, want %v (%v)", got, tt.changed, err)
			}
			if !errors.Is(err, tt.fail) {
				t.Errorf("error %v lost the TPM's cause", err)
			}
		})
	}
	// no TPM at all is unavailable, not a changed state
	k := &TPMKey{TPM: &fakeTPM{}, Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{Slot: 1})
	if err != nil {
		t.Fatal(err)
	}
	k.TPM = nil
	if _, err := k.Passphrase(ctx, Slot{Slot: 1, Token: e.Token}); !errors.Is(err, ErrKeyUnavailable) || errors.Is(err, ErrSealedStateChanged) {
		t.Errorf("no TPM: %v", err)
	}
}
