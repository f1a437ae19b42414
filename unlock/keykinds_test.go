package unlock

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// blockingKMS answers nothing until the caller gives up.
type blockingKMS struct{ fakeKMS }

func (b *blockingKMS) Unseal(ctx context.Context, _, _ string, _ []byte) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestPerKeyTimeout(t *testing.T) {
	dev := image(t, imageSize)
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n" +
		"    - {slot: 1, static: {passphrase: b}}\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: &fakeKMS{}}}
	if _, err := e.Unlock(ctx, vol, dev, imageSize); err != nil {
		t.Fatal(err)
	}
	e.Env.KMS = &blockingKMS{}
	e.KeyTimeout = 100 * time.Millisecond
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	a := r.Attempts[0]
	if r.Slot != 1 || !errors.Is(a.Err, context.DeadlineExceeded) || !errors.Is(a.Err, keys.ErrKeyUnavailable) ||
		a.Duration < 100*time.Millisecond || a.Duration > 10*time.Second {
		t.Fatalf("slot %d, attempt 0: %v after %v", r.Slot, a.Err, a.Duration)
	}
	// sync could not check slot 0 and must leave it alone
	if r.Sync.Changed() || len(r.Sync.Problems) != 1 || !strings.Contains(r.Sync.Problems[0].Error(), "slot 0 (kms)") {
		t.Fatalf("sync: %v", r.Sync)
	}
	if got := slotsOf(t, dev); len(got) != 2 {
		t.Fatalf("slots %v", got)
	}
}

// systemdTPM also unseals systemd-tpm2 tokens, like tpm.Sealer.
type systemdTPM struct {
	fakeTPM
	pass string
	got  *tpm.SystemdToken
}

func (s *systemdTPM) UnsealSystemd(_ context.Context, tok *tpm.SystemdToken) ([]byte, error) {
	s.got = tok
	return []byte(s.pass), nil
}

func TestSystemdEnrolledSlotOpens(t *testing.T) {
	dev := image(t, imageSize)
	e := &Engine{}
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n" + smallKDF
	r, err := e.Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	// what systemd-cryptenroll --tpm2-device leaves: a keyslot whose
	// passphrase is base64 of the sealed secret, and a token (any id)
	// listing that keyslot
	const pass = "c2VjcmV0IHNlYWxlZCBieSBzeXN0ZW1kIGluIHRoZSBUUE0="
	if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte(pass), 2, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	r.Zero()
	tok := `{"type":"systemd-tpm2","keyslots":["2"],"tpm2-blob":"AAAA","tpm2-pcrs":[7],"tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":"00","tpm2-pin":false}`
	if _, err := luks2.ImportToken(dev, 9, []byte(tok), false); err != nil {
		t.Fatal(err)
	}
	dev2 := &systemdTPM{pass: pass}
	e.Env.TPM = dev2
	y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 2, tpm: {}}\n" + smallKDF
	r, err = e.Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	if r.Slot != 2 || dev2.got == nil || dev2.got.Blob != "AAAA" || len(r.Sync.Replaced) != 0 {
		t.Fatalf("slot %d token %+v sync %v", r.Slot, dev2.got, r.Sync)
	}
	hdr, _ := luks2.ReadHeader(dev)
	if !bytes.Contains(hdr.Tokens[9].Raw, []byte("systemd-tpm2")) {
		t.Fatal("sync removed the systemd token")
	}
	// a TPM without systemd support reports the key unavailable, clearly
	e.Env.TPM = &fakeTPM{}
	_, err = e.Open(ctx, volume(t, y, "u-data"), dev)
	if !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "cannot unseal those") {
		t.Fatalf("plain TPM: %v", err)
	}
}

func TestLUKS1OpensWithoutSync(t *testing.T) {
	needTool(t, "cryptsetup")
	dev := image(t, imageSize)
	run(t, []byte("old"), "cryptsetup", "luksFormat", "-q", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", "-", dev.Name())
	before := digest(t, dev)
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "old", 1: "new"}), "EPHEMERAL")
	r, err := (&Engine{}).Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	if r.Slot != 0 || r.Formatted || len(r.Sync.Problems) != 1 || !strings.Contains(r.Sync.Problems[0].Error(), "LUKS1") {
		t.Fatalf("slot %d sync %v", r.Slot, r.Sync)
	}
	if digest(t, dev) != before {
		t.Fatal("a LUKS1 volume was written")
	}
}

// TestTokensReadByCryptsetup checks that cryptsetup accepts the headers the
// engine writes with Talos and recovery tokens, and exports them unchanged.
func TestTokensReadByCryptsetup(t *testing.T) {
	needTool(t, "cryptsetup")
	dev := image(t, imageSize)
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: &fakeKMS{}, TPM: &fakeTPM{}}}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n" +
		"    - {slot: 1, tpm: {}}\n" +
		"    - {slot: 2, static: {passphrase: rescue}, recovery: true}\n" + smallKDF
	r, err := e.Unlock(ctx, volume(t, y, "EPHEMERAL"), dev, imageSize)
	if err != nil || len(r.Sync.Problems) > 0 {
		t.Fatalf("%v %v", err, r)
	}
	r.Zero()
	hdr, _ := luks2.ReadHeader(dev)
	for id, typ := range map[int]string{0: "sideroKMS", 1: "talos-tpm2", 2: "cryptinit-recovery"} {
		out := run(t, nil, "cryptsetup", "token", "export", "--token-id", itoa(id), dev.Name())
		if !strings.Contains(out, `"type":"`+typ+`"`) || strings.TrimSpace(out) != string(hdr.Tokens[id].Raw) {
			t.Errorf("token %d: cryptsetup exports %s, we wrote %s", id, out, hdr.Tokens[id].Raw)
		}
	}
	run(t, []byte("rescue"), "cryptsetup", "open", "--test-passphrase", "--key-slot", "2", "--key-file", "-", dev.Name())
}

// TestCryptsetupTalosKMSVolume opens a volume laid out the way Talos makes a
// kms key (token id = keyslot, type sideroKMS, capitalised UserData,
// passphrase = base64 of the 32-byte key), written entirely by cryptsetup.
func TestCryptsetupTalosKMSVolume(t *testing.T) {
	needTool(t, "cryptsetup")
	key := bytes.Repeat([]byte{0x5a}, 32)
	pass := base64.StdEncoding.EncodeToString(key)
	sealed := base64.StdEncoding.EncodeToString(append([]byte(testUUID+"|"), key...)) // what fakeKMS.Seal returns
	dev := image(t, imageSize)
	run(t, []byte("bootstrap"), "cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--key-slot", "1", "--key-file", "-", dev.Name())
	keyFile := filepath.Join(t.TempDir(), "k")
	os.WriteFile(keyFile, []byte(pass), 0o600)
	run(t, []byte("bootstrap"), "cryptsetup", "luksAddKey", "-q", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-file", "-", "--new-key-slot", "0", dev.Name(), keyFile)
	run(t, []byte(`{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"`+sealed+`"}}`),
		"cryptsetup", "token", "import", "--token-id", "0", dev.Name())

	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: &fakeKMS{}}}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n"
	r, err := e.Open(ctx, volume(t, y, "EPHEMERAL"), dev)
	if err != nil || r.Slot != 0 || r.Kind != "kms" {
		t.Fatalf("%v %+v", err, r)
	}
	r.Zero()
}
