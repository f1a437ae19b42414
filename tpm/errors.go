package tpm

import (
	"errors"
	"fmt"
	"slices"
)

// Sentinel errors callers decide on (wrapped with context where returned).
var (
	// ErrNoTPM means no TPM 2.0 device could be opened.
	ErrNoTPM = errors.New("no TPM 2.0 device found")
	// ErrNoSHA256Bank means the TPM has no (or an incomplete) SHA-256 PCR bank.
	ErrNoSHA256Bank = errors.New("TPM has no SHA-256 PCR bank covering the needed PCRs")
	// ErrPCRUnset means a PCR that firmware or systemd-stub should have
	// measured into is all zeros or all 0xFF.
	ErrPCRUnset = errors.New("PCR was never measured into")
	// ErrDifferentTPM means no parent key of this TPM loads a systemd-tpm2
	// blob: it was sealed by a different TPM (or the TPM was cleared).
	ErrDifferentTPM = errors.New("sealed by a different TPM (or the TPM was cleared)")
	// ErrMalformedBlob means the TPM refused a sealed object's encoding
	// (TPM_RC_SIZE, TPM_RC_INSUFFICIENT, TPM_RC_VALUE, ...): the token is
	// damaged, not sealed by another TPM.
	ErrMalformedBlob = errors.New("sealed object malformed (the TPM refused its encoding)")
	// ErrSRKMismatch means the storage key (SRK) recreated on this TPM has
	// another Name than the key_name the secret was sealed to, so nothing is
	// sent to it: no salt, no sealed object.
	ErrSRKMismatch = errors.New("the TPM's storage key differs from the one this volume was sealed to (different TPM, or TPM cleared)")
	// ErrPCRMismatch means a hash-bound PCR (e.g. PCR 7, the Secure Boot
	// state) differs from its value at sealing time.
	ErrPCRMismatch = errors.New("bound PCR values differ from those at sealing time")
	// ErrNoSignature means no PCR signature matches the current PCR 11 value:
	// another UKI, a later boot phase (after leave-initrd), or no signature.
	ErrNoSignature = errors.New("no PCR policy signature matches the current PCR 11 value")
	// ErrLatchMismatch means PCR 15 holds another value than the one the
	// secret was sealed to: another volume key was latched first this boot
	// (a planted or swapped STATE), or a volume was opened out of order. It
	// comes with ErrPCRMismatch.
	ErrLatchMismatch = errors.New("PCR 15 differs from its value at sealing time (another volume was latched first: a planted or swapped STATE?)")
	// ErrPINRequired means the sealed object needs a TPM PIN (systemd-tpm2
	// token with tpm2-pin) and none was given.
	ErrPINRequired = errors.New("token needs a TPM PIN")
	// ErrWrongPIN means the TPM refused the PIN (TPM_RC_AUTH_FAIL); the TPM
	// counted it against its dictionary-attack lockout.
	ErrWrongPIN = errors.New("the TPM refused the PIN")
	// ErrPINLockout means the TPM is in (or one failure away from) its
	// dictionary-attack lockout, so no PIN was sent.
	ErrPINLockout = errors.New("the TPM's dictionary-attack lockout is (nearly) reached; no PIN tried")
	// ErrClevisPinUnsupported means a clevis JWE is for a pin other than
	// tpm2 (tang, sss, ...): cryptinit cannot decrypt it.
	ErrClevisPinUnsupported = errors.New("clevis pin not supported by cryptinit (only tpm2); open the volume with another key slot")
	// ErrSecureBootOff means Secure Boot is disabled or in setup mode.
	ErrSecureBootOff = errors.New("secure boot is not enabled")
)

// PCRChangedError is a hash-bound PCR mismatch whose changed PCRs are known:
// the token's PCR values at sealing reproduced the object's authPolicy, so
// they are the sealed ones. It matches ErrPCRMismatch, and ErrLatchMismatch
// when PCR 15 is among Changed.
type PCRChangedError struct {
	Changed []int // PCRs whose value differs from the sealed one, ascending
}

func (e *PCRChangedError) Error() string {
	return fmt.Sprintf("PCRs %v differ from sealing time%s", e.Changed, pcrHints(e.Changed))
}

// Is makes errors.Is see ErrPCRMismatch, and ErrLatchMismatch for PCR 15.
func (e *PCRChangedError) Is(target error) bool {
	switch target {
	case ErrPCRMismatch:
		return true
	case ErrLatchMismatch:
		return slices.Contains(e.Changed, LatchPCR)
	}
	return false
}
