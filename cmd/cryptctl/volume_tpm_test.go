package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// swtpmVolume starts a booted swtpm (bootTPM) and writes its PCR policy
// files; it returns the --tpm spec and the policy flags.
func swtpmVolume(t *testing.T) (spec string, policy []string) {
	t.Helper()
	sw := swtpmtest.Start(t, "")
	tp := tpm.NewStreamTransport(sw.Conn)
	key, sigs := bootTPM(t, tp)
	port := sw.Port()
	tp.Close() // swtpm serves one connection at a time
	dir := t.TempDir()
	pub, sig := filepath.Join(dir, "pcr.pem"), filepath.Join(dir, "pcr.sig")
	pemKey, err := tpm.MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	js, err := sigs.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(pub, pemKey, 0o644)
	os.WriteFile(sig, js, 0o644)
	return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port), []string{"--pcr-public-key", pub, "--pcr-signature", sig}
}

// tpmEphConfig writes an EPHEMERAL config with a static key in slot 0
// and the given extra key lines.
func tpmEphConfig(t *testing.T, extra string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "eph.yaml")
	os.WriteFile(cfg, []byte("kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: k0}}\n"+extra+
		"  kdf: {type: pbkdf2, iterations: 1000}\n"), 0o600)
	return cfg
}

// volume sync --tpm does not seal a tpm slot while the TPM's PCR 15 is not
// zero (at boot PCR 15 is zero for STATE and holds STATE's latch after, so
// the slot would never unseal): it says so, names --allow-pcr15 and adds no
// slot; with --allow-pcr15 it adds the slot.
func TestVolumeSyncTPMRefusesNonZeroPCR15(t *testing.T) {
	spec, policy := swtpmVolume(t)
	img := luks2test.NewImage(t, 20<<20)
	if out, err := cryptctl(t, "volume", "format", "--config", tpmEphConfig(t, ""), "--volume", "EPHEMERAL", img); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	tp, err := tpm.OpenSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("another volume's latch"))
	if err := tpm.ExtendPCR(tp, tpm.LatchPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	tp.Close()

	sync := append([]string{"volume", "sync", "--config", tpmEphConfig(t, "    - {slot: 1, tpm: {options: {pcrs: [7]}}}\n"),
		"--volume", "EPHEMERAL", img, "--tpm", spec}, policy...)
	out, err := cryptctl(t, sync...)
	if exitCode(err) != exitSyncProblems || !strings.Contains(out, "PCR 15") || !strings.Contains(out, "--allow-pcr15") {
		t.Fatalf("sync with PCR 15 extended: exit %d, %v\n%s", exitCode(err), err, out)
	}
	t.Logf("refused:\n%s", out)
	_, h := readHeader(t, img)
	if len(h.Keyslots) != 1 {
		t.Fatalf("a refused tpm slot was added: keyslots %v", h.Keyslots)
	}
	for id, tok := range h.Tokens {
		if tok.Type == "talos-tpm2" {
			t.Fatalf("a refused tpm slot left token %d", id)
		}
	}
	if out, err := cryptctl(t, append(sync, "--allow-pcr15")...); err != nil {
		t.Fatalf("sync --allow-pcr15: %v\n%s", err, out)
	}
	if _, h := readHeader(t, img); len(h.Keyslots) != 2 {
		t.Fatalf("sync --allow-pcr15 did not add the tpm slot: keyslots %v", h.Keyslots)
	}
}

// checkSecurebootStatusOnEnroll with a swtpm: the Secure Boot state of the
// machine behind it is unknown (the host's EFI variables say nothing about
// it), so the key is not enrolled and the reason says so.
func TestVolumeSyncTPMSecureBootUnknownOnSwtpm(t *testing.T) {
	spec, policy := swtpmVolume(t)
	img := luks2test.NewImage(t, 20<<20)
	if out, err := cryptctl(t, "volume", "format", "--config", tpmEphConfig(t, ""), "--volume", "EPHEMERAL", img); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	out, err := cryptctl(t, append([]string{"volume", "sync", "--config",
		tpmEphConfig(t, "    - {slot: 1, tpm: {checkSecurebootStatusOnEnroll: true, options: {pcrs: [7]}}}\n"),
		"--volume", "EPHEMERAL", img, "--tpm", spec}, policy...)...)
	if exitCode(err) != exitSyncProblems || !strings.Contains(out, "not this host's TPM device") {
		t.Fatalf("sync with checkSecurebootStatusOnEnroll on swtpm: exit %d, %v\n%s", exitCode(err), err, out)
	}
	if _, h := readHeader(t, img); len(h.Keyslots) != 1 {
		t.Fatalf("the tpm slot was added: keyslots %v", h.Keyslots)
	}
}
