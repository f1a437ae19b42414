package tpm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// PCRs with a fixed meaning in this design (see the Linux TPM PCR registry).
const (
	// SecureBootPCR holds the Secure Boot policy state (firmware).
	SecureBootPCR = 7
	// UKIPCR holds systemd-stub's measurements of the UKI sections and the
	// boot phases; its expected values are signed, not sealed by hash.
	UKIPCR = 11
	// LatchPCR is extended with a volume-key-derived value as each volume
	// opens (systemd's tpm2-measure-pcr), so a blob bound to it unseals only
	// at its volume's place in the boot, once.
	LatchPCR = 15
)

// numPCRs is the number of PCRs in a PC Client TPM bank.
const numPCRs = 24

// DefaultPCRs returns the hash-bound PCRs used when none are configured:
// the Secure Boot state only, as in Talos.
func DefaultPCRs() []int { return []int{SecureBootPCR} }

// normalizePCRs sorts and deduplicates pcrs and checks their range.
func normalizePCRs(pcrs []int) ([]int, error) {
	out := slices.Clone(pcrs)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, p := range out {
		if p < 0 || p >= numPCRs {
			return nil, fmt.Errorf("PCR %d out of range 0-%d", p, numPCRs-1)
		}
	}
	return out, nil
}

// pcrSelection returns the SHA-256 bank selection of pcrs.
func pcrSelection(pcrs []int) (tpm2.TPMLPCRSelection, error) {
	mask := make([]byte, numPCRs/8)
	for _, p := range pcrs {
		if p < 0 || p >= numPCRs {
			return tpm2.TPMLPCRSelection{}, fmt.Errorf("PCR %d out of range 0-%d", p, numPCRs-1)
		}
		mask[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: mask,
	}}}, nil
}

// ReadPCRs reads the SHA-256 bank values of pcrs, in the order given.
func ReadPCRs(t transport.TPM, pcrs []int) ([][]byte, error) {
	values := make([][]byte, 0, len(pcrs))
	for _, p := range pcrs {
		sel, err := pcrSelection([]int{p})
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: sel}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read PCR %d: %w", p, err)
		}
		if len(rsp.PCRValues.Digests) != 1 || len(rsp.PCRValues.Digests[0].Buffer) != sha256.Size {
			return nil, fmt.Errorf("read PCR %d: %w", p, ErrNoSHA256Bank)
		}
		values = append(values, rsp.PCRValues.Digests[0].Buffer)
	}
	return values, nil
}

// ExtendPCR extends pcr's SHA-256 bank with digest (32 bytes).
func ExtendPCR(t transport.TPM, pcr int, digest []byte) error {
	if len(digest) != sha256.Size {
		return fmt.Errorf("extend PCR %d: digest is %d bytes, want %d", pcr, len(digest), sha256.Size)
	}
	if pcr < 0 || pcr >= numPCRs {
		return fmt.Errorf("extend PCR %d: out of range", pcr)
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256,
			Digest:  digest,
		}}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("extend PCR %d: %w", pcr, err)
	}
	return nil
}

// ExtendDigest returns the value a PCR holds after extending old with digest:
// SHA-256(old || digest).
func ExtendDigest(old, digest []byte) []byte {
	h := sha256.New()
	h.Write(old)
	h.Write(digest)
	return h.Sum(nil)
}

// checkSHA256Bank fails with ErrNoSHA256Bank unless the TPM has a SHA-256
// bank with every PCR in pcrs allocated.
func checkSHA256Bank(t transport.TPM, pcrs []int) error {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t)
	if err != nil {
		return fmt.Errorf("query PCR banks: %w", err)
	}
	banks, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return fmt.Errorf("query PCR banks: %w", err)
	}
	for _, b := range banks.PCRSelections {
		if b.Hash != tpm2.TPMAlgSHA256 {
			continue
		}
		for _, p := range pcrs {
			if p/8 >= len(b.PCRSelect) || b.PCRSelect[p/8]&(1<<(p%8)) == 0 {
				return fmt.Errorf("PCR %d not allocated in the SHA-256 bank: %w", p, ErrNoSHA256Bank)
			}
		}
		return nil
	}
	return ErrNoSHA256Bank
}

// mustBeMeasured reports whether an all-zero or all-0xFF value of pcr means
// something is missing: firmware PCRs 0-7 are always measured by UEFI, and
// PCR 11 by systemd-stub. PCR 15 and other OS PCRs start at zero legitimately.
func mustBeMeasured(pcr int) bool { return pcr <= 7 || pcr == UKIPCR }

// checkPCRValue fails with ErrPCRUnset when a PCR that must be measured
// holds all zeros or all 0xFF.
func checkPCRValue(pcr int, v []byte) error {
	if !mustBeMeasured(pcr) {
		return nil
	}
	if bytes.Equal(v, make([]byte, len(v))) {
		return fmt.Errorf("PCR %d is all zeros (not measured: no UEFI/systemd-stub measurements?): %w", pcr, ErrPCRUnset)
	}
	if bytes.Equal(v, bytes.Repeat([]byte{0xff}, len(v))) {
		return fmt.Errorf("PCR %d is all 0xFF (measurement error): %w", pcr, ErrPCRUnset)
	}
	return nil
}
