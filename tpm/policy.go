package tpm

import (
	"crypto/rsa"
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// pcrDigest is the pcrDigest argument of TPM2_PolicyPCR: SHA-256 over the
// selected PCR values concatenated in ascending PCR order.
func pcrDigest(values [][]byte) []byte {
	h := sha256.New()
	for _, v := range values {
		h.Write(v)
	}
	return h.Sum(nil)
}

// PolicyPCRDigest computes, without a TPM, the policy digest of a fresh
// session after TPM2_PolicyPCR(pcrs) with the PCRs holding values (ascending
// PCR order). For pcrs [11] this is the `pol` that a PCR signature signs.
func PolicyPCRDigest(pcrs []int, values [][]byte) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := updatePolicyPCR(calc, pcrs, values); err != nil {
		return nil, err
	}
	return calc.Hash().Digest, nil
}

func updatePolicyPCR(calc *tpm2.PolicyCalculator, pcrs []int, values [][]byte) error {
	if len(pcrs) != len(values) {
		return fmt.Errorf("policy PCR: %d PCRs but %d values", len(pcrs), len(values))
	}
	sel, err := pcrSelection(pcrs)
	if err != nil {
		return err
	}
	return updatePolicyPCRDigest(calc, sel, pcrDigest(values))
}

// updatePolicyPCRDigest extends calc with TPM2_PolicyPCR(sel, digest).
func updatePolicyPCRDigest(calc *tpm2.PolicyCalculator, sel tpm2.TPMLPCRSelection, digest []byte) error {
	return tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: digest}, Pcrs: sel}.Update(calc)
}

// SealingPolicy computes the authPolicy of a sealed object, without a TPM:
// TPM2_PolicyAuthorize(name of signingKey, empty policyRef), then
// TPM2_PolicyPCR(pcrs) with values (ascending PCR order). An empty pcrs
// gives a signed-policy-only object.
func SealingPolicy(signingKey *rsa.PublicKey, pcrs []int, values [][]byte) ([]byte, error) {
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	name, err := signingKeyName(signingKey)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyAuthorize{KeySign: name}).Update(calc); err != nil {
		return nil, err
	}
	if len(pcrs) > 0 {
		if err := updatePolicyPCR(calc, pcrs, values); err != nil {
			return nil, err
		}
	}
	return calc.Hash().Digest, nil
}

// signingKeyPublic is the TPM public area of a PCR-signing RSA key as
// systemd and Talos load it (TPM2_LoadExternal): its Name, and so every
// sealing policy, depends on these exact attributes.
func signingKeyPublic(k *rsa.PublicKey) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			Decrypt:      true,
			SignEncrypt:  true,
			UserWithAuth: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(k.N.BitLen()),
			Exponent:  uint32(k.E),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
	}
}

// signingKeyName is the TPM Name of a PCR-signing key.
func signingKeyName(k *rsa.PublicKey) (tpm2.TPM2BName, error) {
	pub := signingKeyPublic(k)
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return tpm2.TPM2BName{}, fmt.Errorf("name of PCR signing key: %w", err)
	}
	return *name, nil
}
