package unlock

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/cryptinit/cryptinit/netboot/kms"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
)

// The token structs Talos writes, as in siderolabs/talos
// internal/pkg/encryption/keys (ad8823176e75) and go-blockdevice v2
// encryption/luks/token.go (f63c85da5406). unlock/keys checks its own
// structs against the same field list (TestTalosUserDataFields).
type talosLUKSToken[U any] struct {
	UserData U      `json:"UserData"`
	Type     string `json:"type"`
}

// bytes is go-blockdevice's Token.Bytes: the token plus "keyslots": [].
func (t *talosLUKSToken[U]) bytes() ([]byte, error) {
	return json.Marshal(struct {
		*talosLUKSToken[U]
		KeySlots []string `json:"keyslots"`
	}{t, []string{}})
}

type talosTPMUserData struct {
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

type talosKMSUserData struct {
	SealedData []byte `json:"sealedData"`
}

// talosSeal seals secret as Talos's tpm2.Seal does: policy
// PolicyAuthorize(PCR key) then PolicyPCR(pcrs at their values), under the
// transient TCG ECC SRK, keyed-hash FixedTPM|FixedParent (NoDA since Talos
// 1.12: noDA), over a salted session. Written here from Talos's source,
// not with package tpm.
func talosSeal(t *testing.T, sim transport.TPM, signer *rsa.PublicKey, secret []byte, pcrs []int, noDA bool) (priv, pub, keyName, policy []byte) {
	t.Helper()
	signerPub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{Decrypt: true, SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(signer.N.BitLen()), Exponent: uint32(signer.E),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: signer.N.Bytes()}),
	}
	name, err := tpm2.ObjectName(&signerPub)
	if err != nil {
		t.Fatal(err)
	}
	calc, _ := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err := (tpm2.PolicyAuthorize{KeySign: *name}).Update(calc); err != nil {
		t.Fatal(err)
	}
	mask := make([]byte, 3)
	h := sha256.New()
	for _, p := range pcrs {
		mask[p>>3] |= 1 << (p & 7)
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash: tpm2.TPMAlgSHA256, PCRSelect: func() []byte { m := make([]byte, 3); m[p>>3] = 1 << (p & 7); return m }(),
		}}}}.Execute(sim)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(rsp.PCRValues.Digests[0].Buffer)
	}
	if len(pcrs) > 0 { // Talos: no PCRs, no PolicyPCR
		sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: mask}}}
		if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)}, Pcrs: sel}).Update(calc); err != nil {
			t.Fatal(err)
		}
	}
	policy = calc.Hash().Digest

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
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 32, tpm2.Salted(primary.ObjectHandle, *outPub), tpm2.AESEncryption(128, tpm2.EncryptInOut)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, NoDA: noDA},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		}),
	}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(created.OutPrivate), tpm2.Marshal(created.OutPublic), tpm2.Marshal(primary.Name), policy
}

// startKMSServer builds and runs the in-repo kms-server, plaintext (a
// Talos grpc:// endpoint), and returns its endpoint.
func startKMSServer(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "kms-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cryptinit/cryptinit/cmd/kms-server").CombinedOutput(); err != nil {
		t.Fatalf("build kms-server: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--listen", addr, "--insecure-plaintext", "--http-listen", "",
		"--keyring", filepath.Join(dir, "keyring.json"), "--audit-log", "")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kms-server did not listen on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "grpc://" + addr
}

// TestTalosMadeDiskOpens builds a STATE volume the way Talos does, with
// the commands go-blockdevice runs (cryptsetup luksFormat and luksAddKey
// with the passphrase on stdin and --key-slot, then `cryptsetup token
// import --token-id SLOT --json-file=- --token-replace` of the token
// JSON), holding a talos-tpm2 key of each shape (Talos before 1.12: pcrs
// [11], no encryption_version; since: encryption_version 1) and a
// sideroKMS key sealed by the in-repo kms-server, and a talos-tpm2 key
// with no bound PCRs (`pcrs: []`). The engine opens each with the TPM
// simulator and the KMS and writes nothing; after PCR 7 changes only the
// KMS key and the PCR-less TPM key open.
func TestTalosMadeDiskOpens(t *testing.T) {
	needTool(t, "cryptsetup")
	endpoint := startKMSServer(t)
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	defer sim.Close()
	for pcr, ev := range map[int]string{tpm.SecureBootPCR: "secureboot-on", tpm.UKIPCR: ".linux kernel"} {
		d := sha256.Sum256([]byte(ev))
		if err := tpm.ExtendPCR(sim, pcr, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	signer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pcr11, err := tpm.ReadPCRs(sim, []int{tpm.UKIPCR})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm.SignPolicy(signer, []int{tpm.UKIPCR}, pcr11)
	if err != nil {
		t.Fatal(err)
	}
	policySrc := &tpm.StaticSource{Key: &signer.PublicKey, Sigs: tpm.Signatures{"sha256": {sig}}}
	client := kms.New(kms.Options{Attempts: 3, Backoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	defer client.Close()

	random := func() []byte {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	type slot struct {
		pass  []byte
		token []byte
	}
	var slots [4]slot
	for i, shape := range []struct {
		legacy bool
	}{{legacy: true}, {legacy: false}} {
		secret := random()
		priv, pub, name, pol := talosSeal(t, sim, &signer.PublicKey, secret, []int{tpm.SecureBootPCR}, !shape.legacy)
		ud := &talosTPMUserData{KeySlots: []int{i}, SealedBlobPrivate: priv, SealedBlobPublic: pub,
			Alg: "sha256", PolicyHash: pol, KeyName: name}
		if shape.legacy {
			ud.PCRs = []int{tpm.UKIPCR} // Talos < 1.12: the signed PCR, with PCR 7 bound implicitly
		} else {
			ud.PCRs, ud.PubKeyPCRs, ud.EncryptionVersion = []int{tpm.SecureBootPCR}, []int{tpm.UKIPCR}, "1"
		}
		tok, err := (&talosLUKSToken[*talosTPMUserData]{UserData: ud, Type: "talos-tpm2"}).bytes()
		if err != nil {
			t.Fatal(err)
		}
		slots[i] = slot{[]byte(base64.StdEncoding.EncodeToString(secret)), tok}
	}
	secret := random()
	sealed, err := client.Seal(ctx, endpoint, testUUID, secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := (&talosLUKSToken[*talosKMSUserData]{UserData: &talosKMSUserData{SealedData: sealed}, Type: "sideroKMS"}).bytes()
	if err != nil {
		t.Fatal(err)
	}
	slots[2] = slot{[]byte(base64.StdEncoding.EncodeToString(secret)), tok}
	// Talos 1.12 with `pcrs: []`: the signed PCR 11 policy alone, and no
	// "pcrs" in the token (omitempty).
	secret = random()
	priv, pub, name, pol := talosSeal(t, sim, &signer.PublicKey, secret, nil, true)
	tok, err = (&talosLUKSToken[*talosTPMUserData]{Type: "talos-tpm2", UserData: &talosTPMUserData{KeySlots: []int{3},
		SealedBlobPrivate: priv, SealedBlobPublic: pub, PubKeyPCRs: []int{tpm.UKIPCR}, Alg: "sha256",
		EncryptionVersion: "1", PolicyHash: pol, KeyName: name}}).bytes()
	if err != nil || bytes.Contains(tok, []byte(`"pcrs"`)) {
		t.Fatalf("token %s: %v", tok, err)
	}
	slots[3] = slot{[]byte(base64.StdEncoding.EncodeToString(secret)), tok}
	if !strings.HasPrefix(string(slots[2].token), `{"UserData":{"sealedData":"`) || !strings.HasSuffix(string(slots[2].token), `"type":"sideroKMS","keyslots":[]}`) {
		t.Fatalf("token is not go-blockdevice's layout: %s", slots[2].token)
	}

	dev := image(t, imageSize)
	img := dev.Name()
	argon := []string{"--pbkdf-memory=8192", "--pbkdf-force-iterations=4"} // Talos's argonArgs, small
	run(t, slots[0].pass, "cryptsetup", append([]string{"luksFormat", "--type", "luks2", "--key-file=-", "-c", "aes-xts-plain64", img, "--key-slot=0", "--key-size=512", "-q"}, argon...)...)
	for i := 1; i < len(slots); i++ {
		run(t, append(bytes.Clone(slots[0].pass), slots[i].pass...), "cryptsetup", append([]string{"luksAddKey", img, "--key-file=-",
			"--keyfile-size=" + strconv.Itoa(len(slots[0].pass)), "--key-size=512", "--key-slot=" + strconv.Itoa(i)}, argon...)...)
	}
	for i, s := range slots {
		run(t, s.token, "cryptsetup", "token", "import", "-q", img, "--token-id", strconv.Itoa(i), "--json-file=-", "--token-replace")
	}
	// cryptsetup kept the JSON as Talos wrote it
	for i, s := range slots {
		var got, want map[string]any
		_ = json.Unmarshal([]byte(run(t, nil, "cryptsetup", "token", "export", "--token-id", strconv.Itoa(i), img)), &got)
		_ = json.Unmarshal(s.token, &want)
		if g, _ := json.Marshal(got); !bytes.Equal(g, mustJSON(t, want)) {
			t.Fatalf("token %d exported as %s", i, g)
		}
	}
	before := digest(t, dev)

	e := &Engine{Env: keys.Env{TPM: tpm.NewSealer(sim, policySrc), KMS: client, NodeUUID: keys.StaticUUID(testUUID)}}
	configs := []string{"tpm: {}", "tpm: {}", "kms: {endpoint: " + endpoint + "}", "tpm: {}"}
	openSlot := func(i int) (*Result, error) {
		y := "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - {slot: " + strconv.Itoa(i) + ", " + configs[i] + "}\n"
		return e.Open(ctx, volume(t, y, "STATE"), dev)
	}
	for i := range slots {
		r, err := openSlot(i)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if r.Slot != i {
			t.Errorf("slot %d: opened slot %d", i, r.Slot)
		}
		r.Zero()
	}
	if digest(t, dev) != before {
		t.Fatal("opening a Talos-made volume wrote to it")
	}

	// Secure Boot state changes: PCR 7 is bound in both TPM shapes (the
	// old one implicitly), so they refuse; the KMS key still opens.
	d := sha256.Sum256([]byte("secure boot keys changed"))
	if err := tpm.ExtendPCR(sim, tpm.SecureBootPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := openSlot(i); !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "key unavailable") {
			t.Errorf("tpm slot %d after PCR 7 changed: err = %v, want key unavailable", i, err)
		}
	}
	for _, i := range []int{2, 3} {
		if r, err := openSlot(i); err != nil {
			t.Errorf("slot %d (kms, or tpm without bound PCRs) after PCR 7 changed: %v", i, err)
		} else {
			r.Zero()
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
