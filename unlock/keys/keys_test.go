package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/config"
)

const testUUID = "8c4b2a34-7d2e-4c1f-9a55-3e0f6d21b9a7"

func TestStaticAndNodeID(t *testing.T) {
	ctx := context.Background()
	s := Slot{VolumeID: "EPHEMERAL", Slot: 0}
	p, _ := (&Static{Secret: []byte("supersecret")}).Passphrase(ctx, s)
	if string(p) != "supersecret" {
		t.Errorf("static %q", p)
	}
	n := &NodeID{UUID: StaticUUID(testUUID)}
	p, err := n.Passphrase(ctx, s)
	if err != nil || string(p) != testUUID+"EPHEMERAL" {
		t.Fatalf("nodeID %q %v", p, err)
	}
	e, err := n.Enroll(ctx, Slot{VolumeID: "STATE"})
	if err != nil || string(e.Passphrase) != testUUID+"STATE" || e.Token != nil {
		t.Fatalf("nodeID enroll %+v %v", e, err)
	}
	if _, err := (&NodeID{}).Passphrase(ctx, s); !errors.Is(err, ErrKeyUnavailable) {
		t.Errorf("no source: %v", err)
	}
}

func TestEntropy(t *testing.T) {
	tests := []struct {
		uuid string
		ok   bool
	}{
		{testUUID, true},
		{"", false},
		{"00000000-0000-0000-0000-000000000000", false},
		{"ffffffff-ffff-ffff-ffff-ffffffffffff", false},
		{"11111111-1111-1111-2222-333344445555", true},  // '1' 16 times of 36: not more than half
		{"aaaaaaaa-aaaa-aaaa-abcd-0123456789ab", true},  // 'a' exactly 18 = half: allowed
		{"aaaaaaaa-aaaa-aaaa-aaaa-0123456789ab", false}, // 'a' 20 times
		{"------------------------------------", false},
		{"12345678-1234-1234-1234-123456789abc", true},
	}
	for _, tt := range tests {
		err := CheckEntropy(tt.uuid)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v, want ok=%v", tt.uuid, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrLowEntropy) || (tt.uuid != "" && strings.Contains(err.Error(), tt.uuid))) {
			t.Errorf("%q: bad error %v", tt.uuid, err)
		}
	}
	if _, err := (&NodeID{UUID: StaticUUID("")}).Passphrase(context.Background(), Slot{}); !errors.Is(err, ErrLowEntropy) {
		t.Errorf("empty UUID accepted: %v", err)
	}
}

func TestSMBIOS(t *testing.T) {
	// type 0 (BIOS) with one string, then type 1 with the UUID, then end
	bios := append([]byte{0, 4, 0, 0}, []byte("vendor\x00\x00")...)
	sys := make([]byte, 0x1b)
	sys[0], sys[1] = 1, 0x1b
	raw := []byte{0x34, 0x2a, 0x4b, 0x8c, 0x2e, 0x7d, 0x1f, 0x4c, 0x9a, 0x55, 0x3e, 0x0f, 0x6d, 0x21, 0xb9, 0xa7}
	copy(sys[8:], raw)
	sys = append(sys, 0, 0)
	table := append(append(bios, sys...), 127, 4, 0, 0, 0, 0)
	got, err := SystemUUIDFromSMBIOS(table)
	if err != nil || got != testUUID {
		t.Fatalf("got %q %v want %q", got, err, testUUID)
	}
	if _, err := SystemUUIDFromSMBIOS(bios); err == nil {
		t.Error("found a UUID in a table without type 1")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "uuid"), []byte("8C4B2A34-7D2E-4C1F-9A55-3E0F6D21B9A7\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "dmi"), table, 0o644)
	ctx := context.Background()
	if u, _ := (SysfsUUID{Path: filepath.Join(dir, "uuid")}).NodeUUID(ctx); u != testUUID {
		t.Errorf("sysfs %q", u)
	}
	chain := FirstUUID{SysfsUUID{Path: filepath.Join(dir, "missing")}, SMBIOSUUID{Path: filepath.Join(dir, "dmi")}}
	if u, err := chain.NodeUUID(ctx); u != testUUID {
		t.Errorf("chain %q %v", u, err)
	}
	if u, _ := MachineUUID([]byte(" override-1234 \n")).NodeUUID(ctx); u != "override-1234" {
		t.Errorf("META tag 15 override not used: %q", u)
	}
}

func TestLockToSTATE(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	inner := &Static{Secret: []byte("pw")}
	locked := &LockedToSTATE{Inner: inner, Salt: SaltDir(dir)}
	if _, err := locked.Passphrase(ctx, Slot{}); !errors.Is(err, ErrKeyUnavailable) || !errors.Is(err, ErrNoSalt) {
		t.Fatalf("missing salt: %v", err)
	}
	created, err := EnsureSalt(dir, nil)
	if err != nil || !created {
		t.Fatal(created, err)
	}
	st, _ := os.Stat(filepath.Join(dir, SaltFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("salt mode %v", st.Mode())
	}
	data, _ := os.ReadFile(filepath.Join(dir, SaltFile))
	if !strings.HasPrefix(string(data), "diskSalt:\n") || strings.Count(string(data), "\n    - ") != 32 {
		t.Errorf("salt file format:\n%s", data)
	}
	salt, _ := ReadSalt(dir)
	if created, _ := EnsureSalt(dir, nil); created {
		t.Fatal("existing salt replaced")
	}
	if again, _ := ReadSalt(dir); !bytes.Equal(again, salt) {
		t.Fatal("salt changed")
	}
	p, err := locked.Passphrase(ctx, Slot{})
	if err != nil || !bytes.Equal(p, append([]byte("pw"), salt...)) {
		t.Fatalf("locked passphrase %v", err)
	}
	if locked.Kind() != "static+lockToSTATE" {
		t.Error(locked.Kind())
	}
	if string(inner.Secret) != "pw" {
		t.Error("wrapper zeroed the inner key's config")
	}
	// a Talos-written salt file
	talos := "diskSalt:\n" + strings.Repeat("    - 255\n", 32)
	if s, err := ParseSalt([]byte(talos)); err != nil || s[31] != 255 {
		t.Errorf("talos salt: %v", err)
	}
	for _, bad := range []string{"diskSalt: [1, 2]\n", "diskSalt:\n" + strings.Repeat("  - 256\n", 32), "x: 1\n"} {
		if _, err := ParseSalt([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

type fakeKMS struct {
	key  []byte // XOR pad standing in for the server's key
	down bool
	uuid string
}

func (f *fakeKMS) Seal(_ context.Context, endpoint, node string, data []byte) ([]byte, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	f.uuid = node
	out := append([]byte(endpoint+"|"), data...)
	for i := range data {
		out[len(endpoint)+1+i] ^= f.key[i%len(f.key)]
	}
	return out, nil
}

func (f *fakeKMS) Unseal(_ context.Context, endpoint, node string, sealed []byte) ([]byte, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	prefix := endpoint + "|"
	if !bytes.HasPrefix(sealed, []byte(prefix)) || node != f.uuid {
		return nil, errors.New("denied")
	}
	out := bytes.Clone(sealed[len(prefix):])
	for i := range out {
		out[i] ^= f.key[i%len(f.key)]
	}
	return out, nil
}

func TestKMS(t *testing.T) {
	ctx := context.Background()
	kms := &fakeKMS{key: []byte("pad")}
	k := &KMSKey{Endpoint: "grpc://kms:4050", KMS: kms, NodeUUID: StaticUUID(testUUID), Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{Slot: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Passphrase) != 44 || kms.uuid != testUUID {
		t.Errorf("passphrase len %d, uuid %q", len(e.Passphrase), kms.uuid)
	}
	var tok map[string]any
	json.Unmarshal(e.Token, &tok)
	ud, _ := tok["UserData"].(map[string]any)
	if tok["type"] != "sideroKMS" || ud == nil || ud["sealedData"] == nil || tok["keyslots"] == nil {
		t.Fatalf("token %s", e.Token)
	}
	if !strings.HasPrefix(string(e.Token), `{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"`) {
		t.Errorf("token JSON %s", e.Token)
	}
	p, err := k.Passphrase(ctx, Slot{Slot: 3, Token: e.Token})
	if err != nil || !bytes.Equal(p, e.Passphrase) {
		t.Fatalf("unseal %v", err)
	}
	raw, _ := base64.StdEncoding.DecodeString(string(p))
	if len(raw) != 32 {
		t.Errorf("key is %d bytes", len(raw))
	}
	if _, err := k.Passphrase(ctx, Slot{Slot: 3}); !errors.Is(err, ErrNoToken) {
		t.Errorf("no token: %v", err)
	}
	if _, err := k.Passphrase(ctx, Slot{Slot: 3, Token: []byte(`{"type":"talos-tpm2","keyslots":[],"UserData":{}}`)}); !errors.Is(err, ErrBadToken) {
		t.Errorf("wrong token: %v", err)
	}
	kms.down = true
	if _, err := k.Passphrase(ctx, Slot{Slot: 3, Token: e.Token}); !errors.Is(err, ErrKeyUnavailable) {
		t.Errorf("down: %v", err)
	}
	if _, err := (&KMSKey{Endpoint: "x", NodeUUID: StaticUUID(testUUID)}).Enroll(ctx, Slot{}); !errors.Is(err, ErrKeyUnavailable) {
		t.Errorf("no client: %v", err)
	}
}

type fakeTPM struct {
	sealedPCRs []int
	fail       error
}

func (f *fakeTPM) Seal(_ context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error) {
	f.sealedPCRs = pcrs
	return &tpm.Sealed{Private: bytes.Clone(secret), Public: []byte("pub"), PCRs: pcrs, PubKeyPCRs: []int{11},
		Alg: "sha256", PolicyHash: []byte{1, 2}, KeyName: []byte{3, 4}, EncryptionVersion: "1"}, nil
}

func (f *fakeTPM) Unseal(_ context.Context, s *tpm.Sealed) ([]byte, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	return bytes.Clone(s.Private), nil
}

type secureBoot bool

func (s secureBoot) SecureBootEnabled(context.Context) (bool, error) { return bool(s), nil }

func TestTPM(t *testing.T) {
	ctx := context.Background()
	dev := &fakeTPM{}
	k := &TPMKey{PCRs: []int{0, 7}, TPM: dev, Rand: rand.Reader}
	e, err := k.Enroll(ctx, Slot{Slot: 2})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Type     string       `json:"type"`
		UserData TPMTokenData `json:"UserData"`
	}
	if err := json.Unmarshal(e.Token, &tok); err != nil || tok.Type != "talos-tpm2" {
		t.Fatalf("token %s", e.Token)
	}
	ud := tok.UserData
	if len(ud.KeySlots) != 1 || ud.KeySlots[0] != 2 || ud.Alg != "sha256" || ud.EncryptionVersion != "1" ||
		len(ud.PubKeyPCRs) != 1 || ud.PubKeyPCRs[0] != 11 || !slices.Equal(ud.PCRs, []int{0, 7, 15}) || string(ud.SealedBlobPublic) != "pub" {
		t.Errorf("UserData %+v", ud)
	}
	for _, field := range []string{`"sealed_blob_private"`, `"sealed_blob_public"`, `"pubkey_pcrs"`, `"policy_hash"`, `"key_name"`, `"encryption_version":"1"`} {
		if !strings.Contains(string(e.Token), field) {
			t.Errorf("token lacks %s: %s", field, e.Token)
		}
	}
	p, err := k.Passphrase(ctx, Slot{Slot: 2, Token: e.Token})
	if err != nil || !bytes.Equal(p, e.Passphrase) {
		t.Fatalf("unseal %v", err)
	}
	dev.fail = errors.New("policy check failed")
	if _, err := k.Passphrase(ctx, Slot{Slot: 2, Token: e.Token}); !errors.Is(err, ErrKeyUnavailable) {
		t.Errorf("unseal failure: %v", err)
	}
	// legacy token: no encryption_version, no pcrs -> bound to PCR 7
	legacy := SealedFromToken(TPMTokenData{})
	if len(legacy.PCRs) != 1 || legacy.PCRs[0] != 7 {
		t.Errorf("legacy PCRs %v", legacy.PCRs)
	}
	// Secure Boot check on enroll
	checked := &TPMKey{CheckSecureBoot: true, TPM: dev, Rand: rand.Reader, SecureBoot: secureBoot(false)}
	if _, err := checked.Enroll(ctx, Slot{}); !errors.Is(err, ErrSecureBootOff) {
		t.Errorf("secure boot off: %v", err)
	}
	checked.SecureBoot = secureBoot(true)
	if _, err := checked.Enroll(ctx, Slot{}); err != nil {
		t.Errorf("secure boot on: %v", err)
	}
	if !slices.Equal(dev.sealedPCRs, []int{7, 15}) {
		t.Errorf("default PCRs %v, want [7 15] (PCR 7 and the PCR 15 latch)", dev.sealedPCRs)
	}
	if _, err := (&TPMKey{}).Enroll(ctx, Slot{}); !errors.Is(err, ErrKeyUnavailable) {
		t.Errorf("no TPM: %v", err)
	}
}

func TestRecoveryToken(t *testing.T) {
	bare, _ := RecoveryToken(nil)
	if !IsRecovery(bare) || TokenType(bare) != TokenRecovery {
		t.Errorf("bare %s", bare)
	}
	kmsTok := []byte(`{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"AA=="}}`)
	marked, err := RecoveryToken(kmsTok)
	if err != nil || !IsRecovery(marked) || TokenType(marked) != TokenKMS || IsRecovery(kmsTok) {
		t.Errorf("marked %s %v", marked, err)
	}
	var ud kmsUserData
	if err := decodeToken(Slot{Token: marked}, TokenKMS, &ud); err != nil || len(ud.SealedData) != 1 {
		t.Errorf("marked token no longer decodes: %v", err)
	}
}

func TestFromConfig(t *testing.T) {
	env := &Env{NodeUUID: StaticUUID(testUUID)}
	tests := []struct {
		key  config.Key
		kind string
	}{
		{config.Key{Static: &config.StaticKey{Passphrase: "x"}}, "static"},
		{config.Key{NodeID: &config.NodeIDKey{}, LockToSTATE: true}, "nodeID+lockToSTATE"},
		{config.Key{KMS: &config.KMSKey{Endpoint: "e"}}, "kms"},
		{config.Key{TPM: &config.TPMKey{}}, "tpm"},
	}
	for _, tt := range tests {
		k, err := FromConfig(tt.key, env)
		if err != nil || k.Kind() != tt.kind {
			t.Errorf("%v: %v %v", tt.kind, k, err)
		}
	}
	if _, err := FromConfig(config.Key{}, env); err == nil {
		t.Error("key without kind accepted")
	}
}

func FuzzParseSalt(f *testing.F) {
	f.Add([]byte("diskSalt:\n" + strings.Repeat("    - 7\n", 32)))
	f.Add([]byte("diskSalt: [1, 2, 3]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		salt, err := ParseSalt(data)
		if err != nil {
			return
		}
		if len(salt) != SaltSize {
			t.Fatalf("salt of %d bytes accepted", len(salt))
		}
		out, err := MarshalSalt(salt)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseSalt(out)
		if err != nil || !bytes.Equal(back, salt) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// TestSysfsMatchesSMBIOS checks, on a machine that exposes both, that the
// kernel's product_uuid equals our SMBIOS type 1 parse (compat-formats.md
// marks this unconfirmed).
func TestSysfsMatchesSMBIOS(t *testing.T) {
	ctx := context.Background()
	fromSysfs, err1 := SysfsUUID{}.NodeUUID(ctx)
	fromTable, err2 := SMBIOSUUID{}.NodeUUID(ctx)
	if err1 != nil || err2 != nil {
		t.Skipf("no DMI here (sysfs: %v; table: %v); runs on machines and VMs with SMBIOS", err1, err2)
	}
	if fromSysfs != fromTable {
		t.Fatalf("sysfs product_uuid %q != SMBIOS type 1 %q", fromSysfs, fromTable)
	}
}

// TestQEMUSMBIOSTable parses a real SMBIOS table: /sys/firmware/dmi/tables/DMI
// of a QEMU 7.2 q35 guest started with -smbios type=1,uuid=8c4b2a34-...,
// whose kernel (Debian 6.1) showed the same UUID in product_uuid.
func TestQEMUSMBIOSTable(t *testing.T) {
	table, err := os.ReadFile("testdata/qemu-q35-dmi.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, err := SystemUUIDFromSMBIOS(table)
	if err != nil || got != testUUID {
		t.Fatalf("got %q %v, the guest kernel said %q", got, err, testUUID)
	}
}
