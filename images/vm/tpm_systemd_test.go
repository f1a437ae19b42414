package vm

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// systemdSetupConfig formats STATE with a static passphrase the host uses to
// add the systemd-enrolled keyslot; systemdConfig then asks for a TPM key in
// that slot only, so only the systemd-tpm2 token can open STATE.
const (
	systemdSetupPassphrase = "systemd-scenario-setup"
	systemdSetupConfig     = `apiVersion: v1alpha1
kind: VolumeConfig
name: STATE
encryption:
  provider: luks2
  keys:
    - static:
        passphrase: ` + systemdSetupPassphrase + `
      slot: 0
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
`
	systemdConfig = `apiVersion: v1alpha1
kind: VolumeConfig
name: STATE
encryption:
  provider: luks2
  keys:
    - tpm: {}
      slot: 1
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
`
)

// TestVMTPMSystemdToken is TPM scenario (f): a STATE keyslot enrolled with
// systemd-cryptenroll semantics (a systemd-tpm2 token, PCR-only policy on
// PCR 7, passphrase = base64 of the sealed secret) opens at boot. Boot 1
// formats STATE with a setup passphrase and the real root reports PCR 7; the
// host then seals a secret to that PCR 7 on the node's own swtpm state
// (swtpm started on the host with a TCP data port), adds keyslot 1 and the
// token to the disk, and boot 2 must open STATE with slot 1 (tpm).
func TestVMTPMSystemdToken(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "systemd", TalosLayout())
	n.TPM = true
	useProbeRoot(t, n, nil)
	vm, _ := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdSetupConfig), Cmdline: fastFail})
	m := rootSays(t, vm, `pcr 7 ([0-9a-f]{64})$`)
	if m == nil {
		t.FailNow()
	}
	pcr7, _ := hex.DecodeString(m[1])

	secret := make([]byte, 32)
	rand.Read(secret)
	tok := sealOnNodeTPM(t, n.tpmState, secret, pcr7)
	err := n.Disks[0].EditPartition("STATE", func(file string) error {
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		h, err := luks2.ReadHeader(f)
		if err != nil {
			return err
		}
		vk, _, err := h.Unlock(f, []byte(systemdSetupPassphrase), 0)
		if err != nil {
			return err
		}
		defer clear(vk)
		kdf := luks2.KDF{Type: "argon2id", Time: 2, Memory: 16384, Parallel: 1}
		if _, err := luks2.AddKeyslot(f, vk, []byte(base64.StdEncoding.EncodeToString(secret)), 1, kdf); err != nil {
			return err
		}
		_, err = luks2.ImportToken(f, luks2.AnyToken, tok, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(systemdConfig), Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 1 \(tpm`)
	// Slot 1 has no talos-tpm2 token, so only the systemd-tpm2 token can have
	// opened it; it must still be there, assigned to slot 1.
	h := luksHeader(t, n.Disks[0], "STATE")
	found := false
	for _, tok := range h.Tokens {
		found = found || tok.Type == "systemd-tpm2" && slices.Equal(tok.Keyslots, []int{1})
	}
	if _, ok := h.Keyslots[1]; !ok || !found {
		t.Errorf("after boot 2 STATE lost keyslot 1 or its systemd-tpm2 token:\n%s", tokensAndSlots(h))
	}
}

// sealOnNodeTPM starts swtpm on the node's TPM state with a TCP data port
// and seals secret there the systemd-cryptenroll way to PCR 7 = pcr7; it
// returns the systemd-tpm2 token for keyslot 1. swtpm is stopped before it
// returns, so the next boot can use the state.
func sealOnNodeTPM(t *testing.T, stateDir string, secret, pcr7 []byte) []byte {
	t.Helper()
	sw := swtpmtest.Start(t, stateDir)
	defer sw.Stop() // before the next boot uses the state
	var tp transport.TPMCloser = tpm.NewStreamTransport(sw.Conn)
	defer tp.Close()
	// A TPM may answer TPM_RC_RETRY (swtpm does right after starting on a
	// used state); TCG says to send the command again.
	for try := 0; ; try++ {
		tok, err := tpm.EnrollSystemd(tp, secret, []int{tpm.SecureBootPCR}, [][]byte{pcr7}, 1)
		if err == nil {
			if try > 0 {
				t.Logf("swtpm answered TPM_RC_RETRY %d times before sealing", try)
			}
			return tok
		}
		if !errors.Is(err, tpm2.TPMRCRetry) || try == 50 {
			t.Fatalf("seal on the node's swtpm state (try %d): %v", try+1, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
