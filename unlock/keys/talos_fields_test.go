package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cryptinit/cryptinit/tpm"
)

// The structs below are Talos's, field for field, as read in
// siderolabs/talos internal/pkg/encryption/keys/tpm2.go and kms.go (commit
// ad8823176e75, August 2026) and siderolabs/go-blockdevice v2
// encryption/luks/token.go (commit f63c85da5406): Talos decodes a token
// with json.Unmarshal into luksToken[*UserData], and encodes it with an
// added empty "keyslots" list.

// luksToken is go-blockdevice's luks.Token[UserData].
type luksToken[U any] struct {
	UserData U      `json:"UserData"`
	Type     string `json:"type"`
}

// talosTPMToken is Talos's keys.TPMToken.
type talosTPMToken struct {
	KeySlots          []int  `json:"keyslots"`
	SealedBlobPrivate []byte `json:"sealed_blob_private"`
	SealedBlobPublic  []byte `json:"sealed_blob_public"`
	PCRs              []int  `json:"pcrs,omitempty"`
	PubKeyPCRs        []int  `json:"pubkey_pcrs"`
	Alg               string `json:"alg"`
	EncryptionVersion string `json:"encryption_version,omitempty"`
	PolicyHash        []byte `json:"policy_hash"`
	KeyName           []byte `json:"key_name"`
}

// talosKMSToken is Talos's keys.KMSToken.
type talosKMSToken struct {
	SealedData []byte `json:"sealedData"`
}

// cryptinitAdditions are the UserData fields cryptinit writes beyond
// Talos's; Talos's json.Unmarshal ignores them. Any other difference fails.
var cryptinitAdditions = map[string]bool{"cryptinit_pcr_values": true}

// jsonFields maps a struct's JSON names to "type tag" of each field.
func jsonFields(t reflect.Type) map[string]string {
	out := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name := tag
		if j := bytes.IndexByte([]byte(tag), ','); j >= 0 {
			name = tag[:j]
		}
		out[name] = f.Type.String() + " `" + tag + "`"
	}
	return out
}

// TestTalosUserDataFields: our talos-tpm2 and sideroKMS UserData structs
// have exactly Talos's fields, JSON names, omitempty and Go types (so the
// same base64 and number encodings), plus only the listed additions.
func TestTalosUserDataFields(t *testing.T) {
	for _, c := range []struct {
		name      string
		ours, its reflect.Type
	}{
		{"talos-tpm2", reflect.TypeOf(TPMTokenData{}), reflect.TypeOf(talosTPMToken{})},
		{"sideroKMS", reflect.TypeOf(kmsUserData{}), reflect.TypeOf(talosKMSToken{})},
	} {
		ours, its := jsonFields(c.ours), jsonFields(c.its)
		for name, want := range its {
			if got, ok := ours[name]; !ok {
				t.Errorf("%s: field %q missing (Talos has %s)", c.name, name, want)
			} else if got != want {
				t.Errorf("%s: field %q is %s, Talos has %s", c.name, name, got, want)
			}
		}
		for name, got := range ours {
			if _, ok := its[name]; !ok && !cryptinitAdditions[name] {
				t.Errorf("%s: field %q (%s) is not Talos's", c.name, name, got)
			}
		}
	}
}

// decodeAsTalos decodes a token the way Talos does, after checking its top
// level has exactly Talos's keys and that UserData has Talos's fields plus
// only cryptinit's additions.
func decodeAsTalos[U any](t *testing.T, token []byte, typ string) U {
	t.Helper()
	var top map[string]json.RawMessage
	if err := json.Unmarshal(token, &top); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range top {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, []string{"UserData", "keyslots", "type"}) || string(top["keyslots"]) != "[]" {
		t.Fatalf("token top level %s, want exactly UserData, keyslots [] and type", token)
	}
	var ud map[string]json.RawMessage
	if err := json.Unmarshal(top["UserData"], &ud); err != nil {
		t.Fatal(err)
	}
	for k := range cryptinitAdditions {
		delete(ud, k)
	}
	stripped, _ := json.Marshal(ud)
	var u U
	dec := json.NewDecoder(bytes.NewReader(stripped))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		t.Fatalf("UserData %s is not Talos's: %v", stripped, err)
	}
	var tok luksToken[U]
	if err := json.Unmarshal(token, &tok); err != nil || tok.Type != typ {
		t.Fatalf("Talos decode: type %q, %v", tok.Type, err)
	}
	return u
}

// talosSealingPolicy is Talos's CalculateSealingPolicyDigest, written out
// again here: PolicyAuthorize(Name of the PCR key as RSAPubKeyTemplate
// loads it), then, when pcrs is not empty, PolicyPCR(sha256 bank of pcrs,
// SHA-256 of their values in the order given).
func talosSealingPolicy(t *testing.T, key *rsa.PublicKey, pcrs []int, values [][]byte) []byte {
	t.Helper()
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{Decrypt: true, SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull, Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgRSA, tpm2.TPMAlgNull)},
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgNull})},
			KeyBits: tpm2.TPMKeyBits(key.N.BitLen()), Exponent: uint32(key.E),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()}),
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := (tpm2.PolicyAuthorize{KeySign: *name}).Update(calc); err != nil {
		t.Fatal(err)
	}
	if len(pcrs) == 0 {
		return calc.Hash().Digest
	}
	mask := make([]byte, 3)
	h := sha256.New()
	for i, p := range pcrs {
		mask[p>>3] |= 1 << (p & 7)
		h.Write(values[i])
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: mask}}}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: sel}).Update(calc); err != nil {
		t.Fatal(err)
	}
	return calc.Hash().Digest
}

// TestEnrolledTokensAreTalosShaped enrolls a tpm key (on the simulator) and
// a kms key and decodes the tokens as Talos would: same top level, same
// UserData fields, key_name the TCG ECC SRK's Name on this TPM, policy_hash
// Talos's sealing policy for the token's pcrs, and the sealed object Talos's
// (keyed-hash, FixedTPM|FixedParent|NoDA, authPolicy = policy_hash).
func TestEnrolledTokensAreTalosShaped(t *testing.T) {
	ctx := context.Background()
	sim := openTPMSimulator(t)
	signer, sigs := bootSimulator(t, sim)
	k := &TPMKey{TPM: tpm.NewSealer(sim, &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs}), Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{VolumeID: "STATE", Slot: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Zero()
	ud := decodeAsTalos[talosTPMToken](t, e.Token, "talos-tpm2")
	if !slices.Equal(ud.KeySlots, []int{3}) || ud.Alg != "sha256" || ud.EncryptionVersion != "1" ||
		!slices.Equal(ud.PubKeyPCRs, []int{tpm.UKIPCR}) || !sort.IntsAreSorted(ud.PCRs) || !slices.Contains(ud.PCRs, tpm.SecureBootPCR) {
		t.Fatalf("UserData %+v", ud)
	}

	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(sim)
	if !bytes.Equal(ud.KeyName, tpm2.Marshal(srk.Name)) {
		t.Errorf("key_name %x, want the marshalled TPM2B_NAME of the TCG ECC SRK %x", ud.KeyName, tpm2.Marshal(srk.Name))
	}
	values, err := tpm.ReadPCRs(sim, ud.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	if want := talosSealingPolicy(t, &signer.PublicKey, ud.PCRs, values); !bytes.Equal(ud.PolicyHash, want) {
		t.Errorf("policy_hash %x, Talos's sealing policy for PCRs %v is %x", ud.PolicyHash, ud.PCRs, want)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](ud.SealedBlobPublic)
	if err != nil {
		t.Fatal(err)
	}
	area, err := pub.Contents()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](ud.SealedBlobPrivate); err != nil {
		t.Fatalf("sealed_blob_private is no TPM2B_PRIVATE: %v", err)
	}
	wantAttrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: true}
	if area.Type != tpm2.TPMAlgKeyedHash || area.NameAlg != tpm2.TPMAlgSHA256 || area.ObjectAttributes != wantAttrs ||
		!bytes.Equal(area.AuthPolicy.Buffer, ud.PolicyHash) {
		t.Errorf("sealed object: type %v nameAlg %v attrs %+v authPolicy %x; want Talos's keyed-hash %+v with authPolicy = policy_hash",
			area.Type, area.NameAlg, area.ObjectAttributes, area.AuthPolicy.Buffer, wantAttrs)
	}

	// Re-encoded by Talos (Token.Bytes: its struct, keyslots []), the token
	// still opens with us: nothing we need lives outside Talos's fields
	// except the optional PCR values hint.
	talosBytes, err := json.Marshal(struct {
		*luksToken[*talosTPMToken]
		KeySlots []string `json:"keyslots"`
	}{&luksToken[*talosTPMToken]{UserData: &ud, Type: "talos-tpm2"}, []string{}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 3, Token: talosBytes})
	if err != nil || !bytes.Equal(got, e.Passphrase) {
		t.Fatalf("token as Talos re-encodes it: %v", err)
	}

	kk := &KMSKey{Endpoint: "grpc://kms:4050", KMS: &fakeKMS{key: []byte{7}}, NodeUUID: StaticUUID("a8d1f0c2-3b4e-4f5a-9c6d-7e8f90a1b2c3"), Rand: rand.Reader}
	ke, err := kk.Enroll(ctx, Slot{VolumeID: "EPHEMERAL", Slot: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer ke.Zero()
	kud := decodeAsTalos[talosKMSToken](t, ke.Token, "sideroKMS")
	if len(kud.SealedData) == 0 {
		t.Fatalf("sideroKMS token %s has no sealedData", ke.Token)
	}
}

// talosCheckPCRs is the check Talos's tpm2.Unseal (and Seal) starts with
// (validatePCRBanks): PCR 11 and every PCR of the token's pcrs must hold
// neither all zeros nor all 0xFF.
func talosCheckPCRs(t *testing.T, sim transport.TPM, pcrs []int) error {
	t.Helper()
	for _, p := range append([]int{tpm.UKIPCR}, pcrs...) {
		v, err := tpm.ReadPCRs(sim, []int{p})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(v[0], make([]byte, 32)) || bytes.Equal(v[0], bytes.Repeat([]byte{0xff}, 32)) {
			return fmt.Errorf("PCR bank %d is populated with all zeroes or 0xFF", p)
		}
	}
	return nil
}

// TestEnrolledTPMTokenOnTalos pins down why a tpm slot cryptinit enrolls
// does not open on Talos although its token has Talos's fields and policy
// form: it also binds PCR 15 (the latch), which is zero when STATE's key is
// enrolled, and Talos refuses to unseal a token naming an all-zero PCR
// (for the other volumes, PCR 15 holds STATE's latch, which Talos never
// extends). A token as Talos enrolls it (pcrs [7]) passes the same check.
func TestEnrolledTPMTokenOnTalos(t *testing.T) {
	ctx := context.Background()
	sim := openTPMSimulator(t)
	signer, sigs := bootSimulator(t, sim)
	k := &TPMKey{TPM: tpm.NewSealer(sim, &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs}), Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{VolumeID: "STATE", Slot: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Zero()
	ud := decodeAsTalos[talosTPMToken](t, e.Token, "talos-tpm2")
	if !slices.Contains(ud.PCRs, tpm.LatchPCR) {
		t.Fatalf("pcrs %v: no PCR 15 bound; Talos may open these slots now: update this test and the README", ud.PCRs)
	}
	if err := talosCheckPCRs(t, sim, ud.PCRs); err == nil || !strings.Contains(err.Error(), "PCR bank 15") {
		t.Errorf("Talos's PCR check on our STATE token: %v, want a refusal of PCR 15", err)
	}
	if err := talosCheckPCRs(t, sim, []int{tpm.SecureBootPCR}); err != nil {
		t.Errorf("Talos's PCR check on its own pcrs [7]: %v", err)
	}
}

// With bindPCR15: false (NoLatch) the slot is enrolled exactly as Talos
// enrolls it: pcrs [7], Talos's sealing policy, and Talos's PCR check
// passes, so the slot opens on Talos too.
func TestEnrolledNoLatchTokenOnTalos(t *testing.T) {
	ctx := context.Background()
	sim := openTPMSimulator(t)
	signer, sigs := bootSimulator(t, sim)
	k := &TPMKey{NoLatch: true, TPM: tpm.NewSealer(sim, &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs}), Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{VolumeID: "STATE", Slot: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Zero()
	ud := decodeAsTalos[talosTPMToken](t, e.Token, "talos-tpm2")
	if !slices.Equal(ud.PCRs, []int{tpm.SecureBootPCR}) {
		t.Fatalf("pcrs %v, want Talos's default [7]", ud.PCRs)
	}
	if err := talosCheckPCRs(t, sim, ud.PCRs); err != nil {
		t.Errorf("Talos's PCR check: %v", err)
	}
	values, err := tpm.ReadPCRs(sim, ud.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	if want := talosSealingPolicy(t, &signer.PublicKey, ud.PCRs, values); !bytes.Equal(ud.PolicyHash, want) {
		t.Errorf("policy_hash %x, Talos's sealing policy for PCRs %v is %x", ud.PolicyHash, ud.PCRs, want)
	}
	// and it still opens with us
	pass, err := k.Passphrase(ctx, Slot{VolumeID: "STATE", Slot: 0, Token: e.Token})
	if err != nil || !bytes.Equal(pass, e.Passphrase) {
		t.Fatalf("unseal of our own no-latch token: %v", err)
	}
}
