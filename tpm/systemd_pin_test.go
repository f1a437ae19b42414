package tpm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// enrollSystemdPIN seals secret as systemd 252 does for --tpm2-with-pin
// without PCRs: policy PolicyAuthValue, authValue SHA-256(pin).
func enrollSystemdPIN(t *testing.T, tp transport.TPM, secret, pin []byte) *SystemdToken {
	t.Helper()
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyAuthValue{}).Update(calc); err != nil {
		t.Fatal(err)
	}
	parent, err := createPrimary(tp, SystemdLegacyPrimary(tpm2.TPMAlgECC))
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tp, parent.handle)
	auth := SystemdPINAuth(pin)
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{Handle: parent.handle, Name: parent.name, Auth: tpm2.PasswordAuth(nil)},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: auth[:]},
			Data:     tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true},
			AuthPolicy:       tpm2.TPM2BDigest{Buffer: calc.Hash().Digest},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		}),
	}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(map[string]any{
		"type":             "systemd-tpm2",
		"keyslots":         []string{"1"},
		"tpm2-blob":        base64.StdEncoding.EncodeToString(append(tpm2.Marshal(rsp.OutPrivate), tpm2.Marshal(rsp.OutPublic)...)),
		"tpm2-pcrs":        []int{},
		"tpm2-primary-alg": "ecc",
		"tpm2-pin":         true,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseSystemdToken(js)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// daCounter reads TPM_PT_LOCKOUT_COUNTER.
func daCounter(t *testing.T, tp transport.TPM) uint32 {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTLockoutCounter), PropertyCount: 1}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTLockoutCounter {
		t.Fatalf("lockout counter: %v %v", props, err)
	}
	return props.TPMProperty[0].Value
}

// TestSystemdPINAuthValueZeros: a PIN opens its systemd-tpm2 token whatever
// zero bytes its SHA-256 holds (the TPM drops only trailing ones; go-tpm
// v0.9.8 cut at the first), and the right PIN costs no lockout strike.
func TestSystemdPINAuthValueZeros(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		pin, zeros string
	}{
		{"2468 13", "none"},
		{"0005", "inside"},
		{"0226", "trailing"},
		{"4339", "inside and trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.pin, func(t *testing.T) {
			auth := SystemdPINAuth([]byte(tt.pin))
			trimmed := bytes.TrimRight(auth[:], "\x00")
			inside, trailing := bytes.IndexByte(trimmed, 0) >= 0, len(trimmed) < len(auth)
			if got := map[[2]bool]string{{false, false}: "none", {true, false}: "inside", {false, true}: "trailing", {true, true}: "inside and trailing"}[[2]bool{inside, trailing}]; got != tt.zeros {
				t.Fatalf("SHA-256(%q) = %x has zeros %s, the case wants %s", tt.pin, auth, got, tt.zeros)
			}
			sim := openSimulator(t) // a fresh TPM: lockout counter 0
			s := NewSealer(sim, nil)
			secret := secret32()
			tok := enrollSystemdPIN(t, sim, secret, []byte(tt.pin))
			before := daCounter(t, sim)
			got, err := s.UnsealSystemdPIN(ctx, tok, []byte(tt.pin))
			if err != nil {
				t.Fatalf("unseal with the right PIN: %v", err)
			}
			if !bytes.Equal(got, []byte(base64.StdEncoding.EncodeToString(secret))) { // systemd passes the base64 as the passphrase
				t.Fatal("unsealed another secret")
			}
			if after := daCounter(t, sim); after != before {
				t.Fatalf("the right PIN counted against the lockout: %d -> %d", before, after)
			}
			if _, err := s.UnsealSystemdPIN(ctx, tok, []byte(tt.pin+"x")); !errors.Is(err, ErrWrongPIN) {
				t.Fatalf("wrong PIN: %v, want ErrWrongPIN", err)
			}
			if after := daCounter(t, sim); after != before+1 {
				t.Fatalf("a wrong PIN: lockout counter %d -> %d, want one strike", before, after)
			}
		})
	}
}
