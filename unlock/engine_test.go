package unlock

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

func TestFirstBootFormatsSecondBootOpens(t *testing.T) {
	state := t.TempDir()
	if _, err := keys.EnsureSalt(state, nil); err != nil {
		t.Fatal(err)
	}
	vol := configFile(t, "nodeid.yaml", "EPHEMERAL") // nodeID + lockToSTATE, allowDiscards
	dev := image(t, imageSize)
	e := nodeEngine(state)

	first, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Zero()
	m := first.Mapping
	if !first.Formatted || first.Slot != 0 || first.Kind != "nodeID+lockToSTATE" || len(first.VolumeKey) != 64 {
		t.Fatalf("first boot: %+v", first)
	}
	if m.Cipher != "aes-xts-plain64" || m.Offset != 16<<20 || m.SectorSize != 4096 || !m.AllowDiscards {
		t.Errorf("mapping %+v", m)
	}
	if first.Sync == nil || first.Sync.Changed() || len(first.Sync.Problems) > 0 {
		t.Errorf("sync after format: %v", first.Sync)
	}

	second, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Zero()
	if second.Formatted || second.Slot != 0 || !bytes.Equal(second.VolumeKey, first.VolumeKey) {
		t.Fatalf("second boot: formatted=%v slot=%d same key=%v", second.Formatted, second.Slot, bytes.Equal(second.VolumeKey, first.VolumeKey))
	}
	if second.Sync.Changed() {
		t.Errorf("second sync changed: %v", second.Sync)
	}

	// cryptsetup agrees on the passphrase bytes: uuid + volume ID + salt
	needTool(t, "cryptsetup")
	salt, _ := keys.ReadSalt(state)
	pass := append([]byte(testUUID+"EPHEMERAL"), salt...)
	run(t, pass, "cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file", "-", dev.Name())
}

func TestKeyRotation(t *testing.T) {
	dev := image(t, imageSize)
	e := &Engine{}
	boot := func(step string) *Result {
		t.Helper()
		res, err := e.Unlock(ctx, configFile(t, "static-rotation-"+step+".yaml", "EPHEMERAL"), dev, imageSize)
		if err != nil {
			t.Fatalf("step %s: %v", step, err)
		}
		res.Zero()
		if len(res.Sync.Problems) > 0 {
			t.Fatalf("step %s: %v", step, res.Sync)
		}
		return res
	}
	if r := boot("1"); !r.Formatted {
		t.Fatal("step 1 did not format")
	}
	if got := slotsOf(t, dev); len(got) != 1 || got[0] != 0 {
		t.Fatalf("after step 1: slots %v", got)
	}
	if r := boot("2"); r.Slot != 0 || len(r.Sync.Added) != 1 || r.Sync.Added[0] != 1 {
		t.Fatalf("step 2: slot %d sync %v", r.Slot, r.Sync)
	}
	if !opens(t, dev, "oldkey", 0) || !opens(t, dev, "newkey", 1) {
		t.Fatal("after step 2 both keys must open")
	}
	if r := boot("3"); r.Slot != 1 || len(r.Sync.Removed) != 1 || r.Sync.Removed[0] != 0 {
		t.Fatalf("step 3: slot %d sync %v", r.Slot, r.Sync)
	}
	if got := slotsOf(t, dev); len(got) != 1 || got[0] != 1 {
		t.Fatalf("after step 3: slots %v", got)
	}
	if opens(t, dev, "oldkey", luks2.AnySlot) || !opens(t, dev, "newkey", 1) {
		t.Fatal("after step 3 only newkey may open")
	}
	// skipping step 2 (1 -> 3 directly) cannot open, and writes nothing
	dev2 := image(t, imageSize)
	if _, err := e.Unlock(ctx, configFile(t, "static-rotation-1.yaml", "EPHEMERAL"), dev2, imageSize); err != nil {
		t.Fatal(err)
	}
	before := digest(t, dev2)
	_, err := e.Unlock(ctx, configFile(t, "static-rotation-3.yaml", "EPHEMERAL"), dev2, imageSize)
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "slot 1 (static): keyslot is empty") {
		t.Fatalf("1->3: %v", err)
	}
	if digest(t, dev2) != before {
		t.Fatal("a failed open wrote to the device")
	}
}

func TestReplaceAndRecovery(t *testing.T) {
	dev := image(t, imageSize)
	e := &Engine{}
	cfgA := staticConfig("EPHEMERAL", map[int]string{0: "zero", 1: "one", 5: "five"}) +
		"" // slot 5 is unconfigured later
	if _, err := e.Unlock(ctx, volume(t, cfgA, "EPHEMERAL"), dev, imageSize); err != nil {
		t.Fatal(err)
	}
	// a recovery key in slot 31
	cfgB := strings.Replace(staticConfig("EPHEMERAL", map[int]string{0: "zero", 1: "one", 5: "five", 31: "rescue"}),
		"slot: 31\n", "slot: 31\n      recovery: true\n", 1)
	r, err := e.Unlock(ctx, volume(t, cfgB, "EPHEMERAL"), dev, imageSize)
	if err != nil || len(r.Sync.Added) != 1 || r.Sync.Added[0] != 31 {
		t.Fatalf("add recovery: %v %v", err, r.Sync)
	}
	hdr, _ := luks2.ReadHeader(dev)
	if !keys.IsRecovery(hdr.Tokens[31].Raw) {
		t.Fatalf("recovery slot not marked: %s", hdr.Tokens[31].Raw)
	}
	// slot 1 changes passphrase, slot 5 and the recovery key leave the config
	cfgC := staticConfig("EPHEMERAL", map[int]string{0: "zero", 1: "uno"})
	r, err = e.Unlock(ctx, volume(t, cfgC, "EPHEMERAL"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	if r.Slot != 0 || len(r.Sync.Replaced) != 1 || r.Sync.Replaced[0] != 1 || len(r.Sync.Removed) != 1 || r.Sync.Removed[0] != 5 ||
		len(r.Sync.Kept) != 1 || r.Sync.Kept[0] != 31 || len(r.Sync.Problems) > 0 {
		t.Fatalf("sync: %v", r.Sync)
	}
	if !opens(t, dev, "uno", 1) || opens(t, dev, "one", luks2.AnySlot) || opens(t, dev, "five", luks2.AnySlot) || !opens(t, dev, "rescue", 31) {
		t.Fatal("keyslots not as configured")
	}
	// the key that opened is never removed, even when it is not first
	cfgD := staticConfig("EPHEMERAL", map[int]string{0: "changed", 1: "uno"})
	r, err = e.Unlock(ctx, volume(t, cfgD, "EPHEMERAL"), dev, imageSize)
	if err != nil || r.Slot != 1 || len(r.Sync.Replaced) != 1 || r.Sync.Replaced[0] != 0 {
		t.Fatalf("opened by slot 1: %v %v", err, r)
	}
	if !opens(t, dev, "changed", 0) || !opens(t, dev, "uno", 1) {
		t.Fatal("replacement of slot 0 failed")
	}
}

func TestLockToSTATENewSalt(t *testing.T) {
	state := t.TempDir()
	keys.EnsureSalt(state, nil)
	vol := configFile(t, "nodeid.yaml", "u-data")
	dev := image(t, imageSize)
	if _, err := nodeEngine(state).Unlock(ctx, vol, dev, imageSize); err != nil {
		t.Fatal(err)
	}
	before := digest(t, dev)

	wiped := t.TempDir() // STATE replaced: a new salt
	keys.EnsureSalt(wiped, nil)
	_, err := nodeEngine(wiped).Unlock(ctx, vol, dev, imageSize)
	if !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "slot 0 (nodeID+lockToSTATE): key does not open its slot") ||
		!strings.Contains(err.Error(), "was STATE wiped or replaced") {
		t.Fatalf("new salt: %v", err)
	}
	empty := t.TempDir() // STATE not mounted / no salt at all
	_, err = nodeEngine(empty).Unlock(ctx, vol, dev, imageSize)
	if !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "key unavailable") || !strings.Contains(err.Error(), "encryption-salt.yaml") {
		t.Fatalf("no salt: %v", err)
	}
	if digest(t, dev) != before {
		t.Fatal("failed opens wrote to the device")
	}
}

func TestNonEmptyNeverFormatted(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pw"}), "EPHEMERAL")
	tests := []struct {
		name, want string
		prep       func(t *testing.T, f *os.File)
	}{
		{"ext4", "ext4", func(t *testing.T, f *os.File) {
			needTool(t, "mkfs.ext4")
			run(t, nil, "mkfs.ext4", "-q", "-F", f.Name())
		}},
		{"stray LUKS2 secondary magic", "nothing was written", func(t *testing.T, f *os.File) { f.WriteAt([]byte("SKUL\xba\xbe"), 32<<10) }},
		{"stray byte", "non-zero data at offset 4097", func(t *testing.T, f *os.File) { f.WriteAt([]byte{1}, 4097) }},
		{"end of device", "non-zero data", func(t *testing.T, f *os.File) { f.WriteAt([]byte{1}, imageSize-10) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := image(t, imageSize)
			tt.prep(t, dev)
			before := digest(t, dev)
			_, err := (&Engine{}).Unlock(ctx, vol, dev, imageSize)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "EPHEMERAL") ||
				(!errors.Is(err, probe.ErrNotEmpty) && !errors.Is(err, luks2.ErrNoValidHeader)) {
				t.Fatalf("err %v", err)
			}
			if digest(t, dev) != before {
				t.Fatal("device changed")
			}
		})
	}
}

func TestCryptsetupTalosNodeIDVolume(t *testing.T) {
	needTool(t, "cryptsetup")
	dev := image(t, imageSize)
	// what Talos does: luksFormat with the nodeID passphrase <uuid>EPHEMERAL
	run(t, []byte(testUUID+"EPHEMERAL"), "cryptsetup", "luksFormat", "-q", "--type", "luks2",
		"--pbkdf", "argon2id", "--pbkdf-memory", "8192", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1",
		"--key-file", "-", dev.Name())
	vkFile := filepath.Join(t.TempDir(), "vk")
	run(t, []byte(testUUID+"EPHEMERAL"), "cryptsetup", "luksDump", "-q", "--dump-volume-key", "--volume-key-file", vkFile, "--key-file", "-", dev.Name())
	want, _ := os.ReadFile(vkFile)

	vol := volume(t, "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  provider: luks2\n  keys:\n    - nodeID: {}\n      slot: 0\n", "EPHEMERAL")
	res, err := nodeEngine("").Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Zero()
	if res.Formatted || res.Slot != 0 || !bytes.Equal(res.VolumeKey, want) || res.Sync.Changed() {
		t.Fatalf("formatted=%v slot=%d key match=%v sync=%v", res.Formatted, res.Slot, bytes.Equal(res.VolumeKey, want), res.Sync)
	}
	// and the other way round: cryptsetup opens what we format
	dev2 := image(t, imageSize)
	vol2 := volume(t, "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - nodeID: {}\n      slot: 2\n"+smallKDF, "STATE")
	if _, err := nodeEngine("").Unlock(ctx, vol2, dev2, imageSize); err != nil {
		t.Fatal(err)
	}
	run(t, []byte(testUUID+"STATE"), "cryptsetup", "open", "--test-passphrase", "--key-slot", "2", "--key-file", "-", dev2.Name())
}

func TestOpenErrorListsEverySlot(t *testing.T) {
	dev := image(t, imageSize)
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: &fakeKMS{}}}
	if _, err := e.Unlock(ctx, volume(t, staticConfig("EPHEMERAL", map[int]string{0: "right", 3: "three"}), "EPHEMERAL"), dev, imageSize); err != nil {
		t.Fatal(err)
	}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - static: {passphrase: wrong}\n      slot: 0\n" +
		"    - nodeID: {}\n      slot: 1\n" +
		"    - kms: {endpoint: grpc://kms:1}\n      slot: 3\n" + smallKDF
	e.Env.KMS.(*fakeKMS).down = true
	_, err := e.Unlock(ctx, volume(t, y, "EPHEMERAL"), dev, imageSize)
	var oe *OpenError
	if !errors.As(err, &oe) || len(oe.Attempts) != 3 {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		"open EPHEMERAL: no configured key opens the volume",
		"slot 0 (static): key does not open its slot",
		"slot 1 (nodeID): keyslot is empty",
		"slot 3 (kms): slot has no token for this key kind",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "right") || strings.Contains(err.Error(), testUUID) {
		t.Error("error leaks a secret")
	}
}

func TestKMSAndTPMKeys(t *testing.T) {
	dev := image(t, imageSize)
	kms, tpmDev := &fakeKMS{}, &fakeTPM{}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms, TPM: tpmDev}}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - kms: {endpoint: grpc://kms:1}\n      slot: 0\n" +
		"    - tpm: {options: {pcrs: [7]}}\n      slot: 1\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	first, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || !first.Formatted || first.Kind != "kms" || len(first.Sync.Added) != 1 {
		t.Fatalf("format: %v %+v", err, first)
	}
	hdr, _ := luks2.ReadHeader(dev)
	if tok := string(hdr.Tokens[0].Raw); !strings.HasPrefix(tok, `{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"`) {
		t.Errorf("kms token %s", tok)
	}
	if hdr.Tokens[1].Type != "talos-tpm2" || !strings.Contains(string(hdr.Tokens[1].Raw), `"pubkey_pcrs":[11]`) {
		t.Errorf("tpm token %s", hdr.Tokens[1].Raw)
	}
	// KMS down: the TPM key opens, and sync leaves the KMS slot alone
	kms.down = true
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || r.Slot != 1 || r.Sync.Changed() {
		t.Fatalf("kms down: %v %+v", err, r)
	}
	if !strings.Contains(r.Attempts[0].Err.Error(), "key unavailable") {
		t.Errorf("attempt 0: %v", r.Attempts[0].Err)
	}
	// the TPM sealed key is lost (new TPM), KMS opens: the tpm slot did not
	// open the volume, so it is not unsealed to check it (the fingerprint
	// of the first boot stands) and is left as it is
	kms.down = false
	tpmDev.forget = true
	r, err = e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || r.Slot != 0 || r.Sync.Changed() || len(r.Sync.Problems) != 0 {
		t.Fatalf("tpm unavailable: %v %v", err, r.Sync)
	}
	// a TPM slot whose token was lost is replaced
	if err := luks2.RemoveToken(dev, 1); err != nil {
		t.Fatal(err)
	}
	tpmDev.forget = false
	r, err = e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || len(r.Sync.Replaced) != 1 || r.Sync.Replaced[0] != 1 {
		t.Fatalf("token lost: %v %v", err, r.Sync)
	}
	kms.down = true
	if r, err := e.Open(ctx, vol, dev); err != nil || r.Slot != 1 {
		t.Fatalf("re-enrolled tpm slot does not open: %v", err)
	}
}

func TestStateFromMETAAndMachineConfigWins(t *testing.T) {
	metaDev := image(t, meta.Size)
	dev := image(t, imageSize)
	e := nodeEngine("")
	// first boot with the machine config: STATE formatted, tag 9 written
	cfg, err := config.Parse([]byte("kind: VolumeConfig\nname: STATE\nencryption:\n  keys: [{slot: 0, nodeID: {}}]\n" + smallKDF))
	if err != nil {
		t.Fatal(err)
	}
	vol, src, err := meta.ReadStateConfig(cfg, metaDev)
	if err != nil || src != meta.SourceMachineConfig {
		t.Fatal(err, src)
	}
	if r, err := e.Unlock(ctx, *vol, dev, imageSize); err != nil || !r.Formatted {
		t.Fatal(err)
	}
	// a boot without the machine config opens STATE from META alone
	vol, src, err = meta.ReadStateConfig(nil, metaDev)
	if err != nil || src != meta.SourceMETA {
		t.Fatal(err, src)
	}
	if r, err := e.Unlock(ctx, *vol, dev, imageSize); err != nil || r.Formatted || r.Slot != 0 {
		t.Fatalf("from META: %v", err)
	}
	// META says static slot 0 + 1; the machine config (nodeID) wins
	m, _ := meta.Read(metaDev)
	m.Set(meta.TagStateEncryptionConfig, []byte(`{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyStatic":{"KeyData":"meta"}},{"KeySlot":1,"KeyStatic":{"KeyData":"meta1"}}]}`))
	m.Write(metaDev)
	vol, src, err = meta.ReadStateConfig(cfg, metaDev)
	if err != nil || src != meta.SourceMachineConfig || vol.Encryption.Keys[0].Kind() != config.KindNodeID {
		t.Fatal(err, src)
	}
	r, err := e.Unlock(ctx, *vol, dev, imageSize)
	if err != nil || r.Slot != 0 || r.Sync.Changed() {
		t.Fatalf("machine config: %v %v", err, r.Sync)
	}
	m, _ = meta.Read(metaDev)
	if v, _ := m.Get(meta.TagStateEncryptionConfig); strings.Contains(string(v), "meta1") {
		t.Fatalf("META not rewritten to match the machine config: %s", v)
	}
}

func TestConsumeWipeRequest(t *testing.T) {
	needTool(t, "mkfs.xfs")
	metaDev := image(t, meta.Size)
	dev := image(t, 320<<20)
	run(t, nil, "mkfs.xfs", "-q", "-f", dev.Name())
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pw"}), "EPHEMERAL")
	if _, err := (&Engine{}).Unlock(ctx, vol, dev, 320<<20); !errors.Is(err, probe.ErrNotEmpty) {
		t.Fatalf("xfs formatted: %v", err)
	}
	m := meta.New()
	meta.RequestWipe(m, "EPHEMERAL")
	m.Write(metaDev)
	if wiped, err := ConsumeWipeRequest(metaDev, "EPHEMERAL", dev, 320<<20); !wiped || err != nil {
		t.Fatal(wiped, err)
	}
	if r, err := (&Engine{}).Unlock(ctx, vol, dev, 320<<20); err != nil || !r.Formatted {
		t.Fatalf("after wipe: %v", err)
	}
	if wiped, _ := ConsumeWipeRequest(metaDev, "EPHEMERAL", dev, 320<<20); wiped {
		t.Fatal("wiped twice")
	}
}

// TestSyncFingerprintSkipsUnchanged: once a full sync has checked every key,
// later boots with nothing changed skip the checks (one KDF per boot), and
// any change to the config, a key's source or the header brings them back.
func TestSyncFingerprintSkipsUnchanged(t *testing.T) {
	dev := image(t, imageSize)
	uuid := keys.StaticUUID(testUUID)
	e := &Engine{Env: keys.Env{NodeUUID: &uuid}}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, static: {passphrase: a}}\n" +
		"    - {slot: 1, nodeID: {}}\n" +
		"    - {slot: 2, static: {passphrase: c}}\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	boot := func(name string) *SyncReport {
		t.Helper()
		r, err := e.Unlock(ctx, vol, dev, imageSize)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r.Zero()
		if len(r.Sync.Problems) > 0 {
			t.Fatalf("%s: %v", name, r.Sync)
		}
		return r.Sync
	}
	if s := boot("format"); s.UpToDate || len(s.Added) != 2 {
		t.Fatalf("format: %v", s)
	}
	if s := boot("second"); !s.UpToDate {
		t.Fatalf("second boot checked again: %v", s)
	}
	// the header changes behind our back: a slot is removed
	if err := luks2.KillKeyslot(dev, 2); err != nil {
		t.Fatal(err)
	}
	if s := boot("slot killed"); s.UpToDate || len(s.Added) != 1 || s.Added[0] != 2 {
		t.Fatalf("after kill: %v", s)
	}
	if s := boot("settled"); !s.UpToDate {
		t.Fatalf("settled: %v", s)
	}
	// the node UUID changes (META tag 15): slot 1's key changed
	uuid = keys.StaticUUID("0b9d5e7c-3a41-4f6e-8d2c-7f1a9e4b6c03")
	if s := boot("new uuid"); s.UpToDate || len(s.Replaced) != 1 || s.Replaced[0] != 1 {
		t.Fatalf("new uuid: %v", s)
	}
	// the config changes a passphrase
	vol = volume(t, strings.Replace(y, "passphrase: c", "passphrase: c2", 1), "EPHEMERAL")
	if s := boot("new passphrase"); s.UpToDate || len(s.Replaced) != 1 || s.Replaced[0] != 2 {
		t.Fatalf("new passphrase: %v", s)
	}
	if !opens(t, dev, "c2", 2) || !opens(t, dev, "0b9d5e7c-3a41-4f6e-8d2c-7f1a9e4b6c03EPHEMERAL", 1) {
		t.Fatal("keys not as configured")
	}
	hdr, _ := luks2.ReadHeader(dev)
	id, digest := storedFingerprint(hdr)
	if id != 31 || len(digest) != 32 {
		t.Fatalf("fingerprint token %d %x", id, digest)
	}
}

// countingKMS counts unseals: an unchanged boot asks the KMS once per volume.
type countingKMS struct {
	fakeKMS
	unseals int
}

func (c *countingKMS) Unseal(ctx context.Context, endpoint, node string, sealed []byte) ([]byte, error) {
	c.unseals++
	return c.fakeKMS.Unseal(ctx, endpoint, node, sealed)
}

func TestFingerprintAsksTheOpenerOnce(t *testing.T) {
	dev := image(t, imageSize)
	kms := &countingKMS{}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n" +
		"    - {slot: 1, static: {passphrase: b}}\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	for i := 0; i < 2; i++ {
		r, err := e.Unlock(ctx, vol, dev, imageSize)
		if err != nil {
			t.Fatal(err)
		}
		r.Zero()
	}
	kms.unseals = 0
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || !r.Sync.UpToDate || kms.unseals != 1 {
		t.Fatalf("err %v, sync %v, %d unseals", err, r.Sync, kms.unseals)
	}
}
