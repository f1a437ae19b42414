package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/cryptinit/cryptinit/tpm"
)

// openTPMSimulator starts the go-tpm-tools simulator; a simulator that
// cannot run is a failure, not a skip.
func openTPMSimulator(t *testing.T) transport.TPMCloser {
	t.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return sim
}

// bootSimulator measures a Secure Boot state into PCR 7 and a UKI into
// PCR 11, then enter-initrd, and returns a PCR signing key with its
// signature of the current PCR 11.
func bootSimulator(t *testing.T, sim transport.TPM) (*rsa.PrivateKey, tpm.Signatures) {
	t.Helper()
	for pcr, ev := range map[int]string{tpm.SecureBootPCR: "secureboot-on", tpm.UKIPCR: ".linux kernel"} {
		d := sha256.Sum256([]byte(ev))
		if err := tpm.ExtendPCR(sim, pcr, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tpm.MeasurePhase(sim, tpm.PhaseEnterInitrd, nil); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return key, signPCR11(t, sim, key)
}

func signPCR11(t *testing.T, sim transport.TPM, key *rsa.PrivateKey) tpm.Signatures {
	t.Helper()
	v, err := tpm.ReadPCRs(sim, []int{tpm.UKIPCR})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm.SignPolicy(key, []int{tpm.UKIPCR}, v)
	if err != nil {
		t.Fatal(err)
	}
	return tpm.Signatures{"sha256": {sig}}
}

// talosSealed is what Talos's sealing routine returns.
type talosSealed struct {
	private, public, keyName, policy []byte
}

// sealLikeTalos seals secret the way Talos does, independently of package
// tpm's Seal: authPolicy = PolicyAuthorize(Name of the PCR signing key as
// LoadExternal sees it) then PolicyPCR(7 at its current value); parent the
// ECC SRK from the TCG template, transient; object FixedTPM|FixedParent (no
// NoDA, no userWithAuth), created over a salted session.
func sealLikeTalos(t *testing.T, sim transport.TPM, signer *rsa.PublicKey, secret []byte) talosSealed {
	t.Helper()
	signerPub := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{Decrypt: true, SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(signer.N.BitLen()),
			Exponent:  uint32(signer.E),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: signer.N.Bytes()}),
	}
	signerName, err := tpm2.ObjectName(&signerPub)
	if err != nil {
		t.Fatal(err)
	}
	pcr7, err := tpm.ReadPCRs(sim, []int{tpm.SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyAuthorize{KeySign: *signerName}).Update(calc); err != nil {
		t.Fatal(err)
	}
	pcrHash := sha256.Sum256(pcr7[0])
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{1 << tpm.SecureBootPCR, 0, 0}, // PCR 7, 24-PCR bank
	}}}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrHash[:]}, Pcrs: sel}).Update(calc); err != nil {
		t.Fatal(err)
	}
	policy := calc.Hash().Digest

	primary, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = tpm2.FlushContext{FlushHandle: primary.ObjectHandle}.Execute(sim) }()
	outPub, err := primary.OutPublic.Contents()
	if err != nil {
		t.Fatal(err)
	}
	created, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: primary.ObjectHandle, Name: primary.Name,
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 20, tpm2.Salted(primary.ObjectHandle, *outPub), tpm2.AESEncryption(128, tpm2.EncryptInOut)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	return talosSealed{
		private: tpm2.Marshal(created.OutPrivate), public: tpm2.Marshal(created.OutPublic),
		keyName: tpm2.Marshal(primary.Name), policy: policy,
	}
}

// talosLegacyUserData has exactly the fields Talos before 1.12 writes into a
// talos-tpm2 token's UserData; pcrs is always [11] there.
type talosLegacyUserData struct {
	KeySlots          []int  `json:"keyslots"`
	SealedBlobPrivate []byte `json:"sealed_blob_private"`
	SealedBlobPublic  []byte `json:"sealed_blob_public"`
	PCRs              []int  `json:"pcrs"`
	Alg               string `json:"alg"`
	PolicyHash        []byte `json:"policy_hash"`
	KeyName           []byte `json:"key_name"`
}

// talosV1UserData is the newer shape: encryption_version "1", pcrs are the
// hash-bound PCRs and pubkey_pcrs the signed ones.
type talosV1UserData struct {
	talosLegacyUserData
	PubKeyPCRs        []int  `json:"pubkey_pcrs"`
	EncryptionVersion string `json:"encryption_version"`
}

func talosShapedToken(t *testing.T, ud any) []byte {
	t.Helper()
	raw, err := json.Marshal(ud)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := json.Marshal(map[string]any{"type": "talos-tpm2", "keyslots": []string{}, "UserData": json.RawMessage(raw)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestTalosTokenShapesUnseal unseals, on the TPM simulator, tokens sealed
// in Talos's policy order and written in both of Talos's token shapes. The
// older shape's "pcrs":[11] names the signed PCR: a new UKI with a new
// signature still unseals, a changed PCR 7 does not.
func TestTalosTokenShapesUnseal(t *testing.T) {
	ctx := context.Background()
	sim := openTPMSimulator(t)
	signer, sigs := bootSimulator(t, sim)
	src := &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs}
	k := &TPMKey{TPM: tpm.NewSealer(sim, src)}

	secret := bytes.Repeat([]byte{0x5a}, 32)
	want := []byte(base64.StdEncoding.EncodeToString(secret))
	sealed := sealLikeTalos(t, sim, &signer.PublicKey, secret)
	legacy := talosLegacyUserData{
		KeySlots: []int{0}, SealedBlobPrivate: sealed.private, SealedBlobPublic: sealed.public,
		PCRs: []int{tpm.UKIPCR}, Alg: "sha256", PolicyHash: sealed.policy, KeyName: sealed.keyName,
	}
	v1 := talosV1UserData{talosLegacyUserData: legacy, PubKeyPCRs: []int{tpm.UKIPCR}, EncryptionVersion: "1"}
	v1.PCRs = []int{tpm.SecureBootPCR}
	shapes := []struct {
		name  string
		token []byte
	}{
		{"before 1.12 (pcrs [11], no encryption_version)", talosShapedToken(t, legacy)},
		{"encryption_version 1", talosShapedToken(t, v1)},
	}
	unsealAll := func(t *testing.T) {
		t.Helper()
		for _, sh := range shapes {
			got, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: sh.token})
			if err != nil {
				t.Errorf("%s: %v", sh.name, err)
			} else if !bytes.Equal(got, want) {
				t.Errorf("%s: passphrase %q, want %q", sh.name, got, want)
			}
		}
	}
	unsealAll(t)

	// A new UKI (PCR 11 moves) with its own signature still unseals: PCR 11
	// is covered by the signature, not bound by value.
	d := sha256.Sum256([]byte("new initrd"))
	if err := tpm.ExtendPCR(sim, tpm.UKIPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	src.Sigs = signPCR11(t, sim, signer)
	unsealAll(t)

	// A key_name that is not this TPM's storage key is refused, naming the
	// volume and slot; the slot stays (unavailable, not wrong).
	other := legacy
	other.KeyName = bytes.Clone(legacy.KeyName)
	other.KeyName[len(other.KeyName)-1] ^= 1
	_, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: talosShapedToken(t, other)})
	if !errors.Is(err, tpm.ErrSRKMismatch) || !errors.Is(err, ErrKeyUnavailable) || !strings.Contains(err.Error(), "STATE slot 0") {
		t.Errorf("altered key_name: err = %v, want ErrSRKMismatch and ErrKeyUnavailable naming STATE slot 0", err)
	}

	// PCR 7 is bound by value in both shapes.
	d = sha256.Sum256([]byte("secure boot keys changed"))
	if err := tpm.ExtendPCR(sim, tpm.SecureBootPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	for _, sh := range shapes {
		if _, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: sh.token}); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Errorf("%s after PCR 7 changed: err = %v, want ErrPCRMismatch", sh.name, err)
		}
	}
}

// TestTPMEnrollOnSimulator: a key cryptinit enrolls is a talos-tpm2 token of
// encryption_version 1 bound to PCRs 7 and 15, keeping the PCR values at
// sealing, and unseals until PCR 15 moves.
func TestTPMEnrollOnSimulator(t *testing.T) {
	ctx := context.Background()
	sim := openTPMSimulator(t)
	signer, sigs := bootSimulator(t, sim)
	k := &TPMKey{TPM: tpm.NewSealer(sim, &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs}), Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{VolumeID: "STATE", Slot: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Zero()
	var tok struct {
		UserData TPMTokenData `json:"UserData"`
	}
	if err := json.Unmarshal(e.Token, &tok); err != nil {
		t.Fatal(err)
	}
	ud := tok.UserData
	if ud.EncryptionVersion != "1" || !slices.Equal(ud.PCRs, []int{7, 15}) || !slices.Equal(ud.PubKeyPCRs, []int{11}) ||
		len(ud.PCRValues) != 2 || !bytes.Equal(ud.PCRValues[1], make([]byte, 32)) || !strings.Contains(string(e.Token), `"cryptinit_pcr_values":[`) {
		t.Fatalf("token %s", e.Token)
	}
	got, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: e.Token})
	if err != nil || !bytes.Equal(got, e.Passphrase) {
		t.Fatalf("unseal: %v", err)
	}
	if err := tpm.LatchVolumeKey(sim, "STATE", []byte("volume key"), nil); err != nil {
		t.Fatal(err)
	}
	_, err = k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: e.Token})
	if !errors.Is(err, tpm.ErrLatchMismatch) || errors.Is(err, ErrSealedStateChanged) {
		t.Fatalf("after the latch: err = %v, want ErrLatchMismatch and no re-enrollment", err)
	}
}
