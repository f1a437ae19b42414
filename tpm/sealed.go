// Package tpm seals secrets to the TPM against Secure Boot state (PCR 7) and a
// signed PCR 11 policy, measures boot phases, and predicts PCR 11 for a UKI.
package tpm

// Sealed is a secret sealed to one TPM: everything needed to unseal it again,
// as kept in a LUKS2 token (Talos's talos-tpm2 UserData carries these fields).
type Sealed struct {
	Private           []byte // marshalled TPM2B_PRIVATE of the sealed object
	Public            []byte // marshalled TPM2B_PUBLIC of the sealed object
	PCRs              []int  // PCRs bound by hash in the policy (default [7])
	PubKeyPCRs        []int  // PCRs covered by the signed policy ([11])
	Alg               string // PCR bank, "sha256"
	PolicyHash        []byte // the object's authPolicy digest
	KeyName           []byte // TPM2B_NAME of the SRK that sealed it
	EncryptionVersion string // "1"; empty on legacy tokens (also bound to PCR 7)
	// PCRValues are the values of PCRs at sealing time, in PCRs order
	// (cryptinit's tokens keep them; nil for others). They are a hint the
	// token carries, used only once they reproduce the loaded object's
	// authPolicy: then a failed unseal can say which PCR changed.
	PCRValues [][]byte
}
