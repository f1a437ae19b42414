package tpm

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EnrollSystemd seals secret the way systemd-cryptenroll --tpm2-device
// (systemd 252, PCR-only policy) does and returns the systemd-tpm2 token
// JSON for keyslot; the LUKS passphrase of that keyslot is the standard base64
// of secret. The policy is PolicyPCR(pcrs) holding values (ascending PCR
// order) rather than the TPM's current PCRs, so a host can seal to the PCRs a
// machine will have at boot (e.g. on the machine's swtpm state, started
// outside it). The parent is systemd 252's ECC primary (SystemdLegacyPrimary).
func EnrollSystemd(t transport.TPM, secret []byte, pcrs []int, values [][]byte, keyslot int) ([]byte, error) {
	if len(secret) == 0 || len(secret) > maxSecret {
		return nil, fmt.Errorf("enroll systemd-tpm2: secret is %d bytes, want 1-%d", len(secret), maxSecret)
	}
	policy, err := PolicyPCRDigest(pcrs, values)
	if err != nil {
		return nil, fmt.Errorf("enroll systemd-tpm2: %w", err)
	}
	parent, err := createPrimary(t, SystemdLegacyPrimary(tpm2.TPMAlgECC))
	if err != nil {
		return nil, fmt.Errorf("enroll systemd-tpm2: %w", err)
	}
	defer flush(t, parent.handle)
	priv, pub, err := createSealedObject(t, parent, secret, policy, false)
	if err != nil {
		return nil, fmt.Errorf("enroll systemd-tpm2: %w", err)
	}
	return json.Marshal(SystemdToken{
		Type:       "systemd-tpm2",
		Keyslots:   []string{strconv.Itoa(keyslot)},
		Blob:       base64.StdEncoding.EncodeToString(append(priv, pub...)),
		PCRs:       pcrs,
		PCRBank:    "sha256",
		PrimaryAlg: "ecc",
		PolicyHash: hex.EncodeToString(policy),
	})
}
