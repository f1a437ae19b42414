package tpm

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// vectorKey is a fixed PCR signing public key for the policy vectors below.
const vectorKey = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzMkJTUuL1+C5Wze23iil
vItlDfT1KO7NLku2KiSyqI2KQcKmNFYFGGwzIDT70IUmedZIC6Od6+RaefpjZXdg
BxsL1pz8/V9pFiNdgmIl7nteONcDqljo4y164pm0fbK9APMvq9zeveEiYWI727xQ
C0l9X4G/NOKlkoBfemmYdCJab8rKmnkWpAFr1ZyfCgVgGtc6uFuDrAjZZw95jPmw
dQWymROyfjHJx0HdvIScJjCGDoELIAZ5mguXOpp8ix4Glz8luGQbclUEZbmiUovz
oAhuRM+mFNfvxqx1ehBS8wSYQJ7iUkhVGb2ohhnz4xPRwVgEABdbuXPO4M57i8f2
fQIDAQAB
-----END PUBLIC KEY-----
`

// TestPolicyVectors pins the offline policy digests. The PolicyPCR vector is
// Talos's own (CalculatePolicy test); the sealing policy code was checked
// against Talos's CalculateSealingPolicyDigest vector with its test key
// (a0f4297a...) before this vector, for our key, was recorded.
func TestPolicyVectors(t *testing.T) {
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{10, 11, 12}}}}
	d := sha256.Sum256([]byte{1, 3, 5})
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := updatePolicyPCRDigest(calc, sel, d[:]); err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(calc.Hash().Digest), "84d65147b05394d0fac45e3600203e3a110127fbe26fc1e30303102133f915e3"; got != want {
		t.Errorf("PolicyPCR digest = %s, want %s", got, want)
	}

	key, err := ParsePublicKeyPEM([]byte(vectorKey))
	if err != nil {
		t.Fatal(err)
	}
	pcr7 := make([]byte, 32)
	for i := range pcr7 {
		pcr7[i] = byte(i)
	}
	pol, err := SealingPolicy(key, []int{7}, [][]byte{pcr7})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(pol), "a15283ea9abdb2dcc10f9b4e16b7f0200d06eb034649c77eefe091b5d512df7a"; got != want {
		t.Errorf("sealing policy = %s, want %s", got, want)
	}
}
