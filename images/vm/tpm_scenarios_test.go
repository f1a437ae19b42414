package vm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/tpm"
)

// tpmNode is a Talos-layout node with a software TPM, for the TPM scenarios
// that need the PCR 11 policy the image build signs.
func tpmNode(t *testing.T, name string) (*Artifacts, *Node) {
	t.Helper()
	a := RequireInit(t)
	if a.PCRKey == "" {
		testenv.Missing(t, "the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	t.Parallel()
	n := NewNode(t, a, name, TalosLayout())
	n.TPM = true
	return a, n
}

// bootUKI is the UKI the harness built and signed for a node's boot (1-based).
func bootUKI(n *Node, boot int) string {
	return filepath.Join(n.Dir, fmt.Sprintf("boot%d", boot), "uki.efi")
}

// TestVMTPMSecureBootOff is TPM scenario (b): the same signed UKI booted by
// OVMF without Secure Boot keeps PCR 11 (its signed policy still verifies)
// but changes PCR 7, so the TPM refuses; STATE opens with its nodeID slot,
// EPHEMERAL with its recovery slot, and the console names slot 0 and PCR 7.
func TestVMTPMSecureBootOff(t *testing.T) {
	_, n := tpmNode(t, "sboff")
	cfg := ProjectConfig(t, "tpm.yaml")
	vm, _ := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustSay(t, vm, `STATE: formatted .* with slot 0 \(tpm`)
	before := tokensAndSlots(luksHeader(t, n.Disks[0], "STATE"))

	vm, r := n.BootToRoot(BootOptions{Firmware: UEFI, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	mustMarker(t, r, "/var", 1)
	mustSay(t, vm, `STATE: opened with slot 1 \(nodeID`)
	mustSay(t, vm, `STATE: +slot 0 \(tpm.*PCR 7`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 31 \(static`)
	mustSay(t, vm, `EPHEMERAL: +slot 0 \(tpm.*PCR 7`)
	if after := tokensAndSlots(luksHeader(t, n.Disks[0], "STATE")); after != before {
		t.Errorf("STATE's key slots changed on the boot without Secure Boot:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestVMTPMCmdlineResigned is TPM scenario (c): a UKI with another .cmdline,
// signed again with the same PCR key, moves PCR 11 but still opens both
// volumes with the TPM slot, without re-enrollment: STATE's and EPHEMERAL's
// keyslots and tokens are byte for byte those of the first boot.
func TestVMTPMCmdlineResigned(t *testing.T) {
	_, n := tpmNode(t, "cmdline")
	cfg := ProjectConfig(t, "tpm.yaml")
	n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	before := map[string]string{}
	for _, vol := range []string{"STATE", "EPHEMERAL"} {
		before[vol] = tokensAndSlots(luksHeader(t, n.Disks[0], vol))
	}

	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail + " tpmtest=cmdline-changed"})
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 0 \(tpm`)
	if bytes.Equal(predictPCR11(t, bootUKI(n, 1), tpm.PhaseEnterInitrd), predictPCR11(t, bootUKI(n, 2), tpm.PhaseEnterInitrd)) {
		t.Errorf("the two UKIs predict the same PCR 11: the .cmdline change did not reach PCR 11")
	}
	for _, vol := range []string{"STATE", "EPHEMERAL"} {
		if after := tokensAndSlots(luksHeader(t, n.Disks[0], vol)); after != before[vol] {
			t.Errorf("%s was re-enrolled after the .cmdline change:\nbefore:\n%s\nafter:\n%s", vol, before[vol], after)
		}
	}
}

// TestVMTPMAfterSwitchRoot is TPM scenarios (d) and (e), with STATE's TPM key
// bound to PCRs 7 and 15. Boot 1 seals it; boot 2 unseals it in the initrd,
// then images/cmd/tpmprobe tries again from the real root:
//   - (d) with the UKI's own .pcrsig: refused because of PCR 11 (no signed
//     policy matches PCR 11 after leave-initrd);
//   - (e) with a signature the test makes for the predicted PCR 11 after
//     enter-initrd and leave-initrd (so PCR 11 passes, and the probe's PCR 11
//     must equal that prediction): refused because of PCR 15 only (the policy
//     would hold with PCR 15 at zero, as when sealed; the init latched it).
func TestVMTPMAfterSwitchRoot(t *testing.T) {
	a, n := tpmNode(t, "latch")
	cfg := bytes.Replace(ProjectConfig(t, "tpm.yaml"), []byte("pcrs: [7]"), []byte("pcrs: [7, 15]"), 1)
	if !bytes.Contains(cfg, []byte("pcrs: [7, 15]")) {
		t.Fatal("configs/tpm.yaml no longer has `pcrs: [7]` for STATE")
	}
	vm, _ := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustSay(t, vm, `STATE: formatted .* with slot 0 \(tpm`)

	uki := bootUKI(n, 1)
	files := map[string][]byte{}
	for name, section := range map[string]string{"pcrpkey.pem": ".pcrpkey", "uki.pcrsig.json": ".pcrsig"} {
		b, err := tpm.ReadUKISection(uki, section)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = bytes.TrimRight(b, "\x00")
	}
	afterLeave := predictPCR11(t, uki, tpm.PhaseEnterInitrd, tpm.PhaseLeaveInitrd)
	pem, err := os.ReadFile(a.PCRKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm.ParsePrivateKeyPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm.SignPolicy(key, []int{tpm.UKIPCR}, [][]byte{afterLeave})
	if err != nil {
		t.Fatal(err)
	}
	if files["leave-initrd.pcrsig.json"], err = (tpm.Signatures{"sha256": {sig}}).Marshal(); err != nil {
		t.Fatal(err)
	}
	useProbeRoot(t, n, files)

	vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
	if !bytes.Equal(predictPCR11(t, bootUKI(n, 2), tpm.PhaseEnterInitrd), predictPCR11(t, uki, tpm.PhaseEnterInitrd)) {
		t.Fatal("boot 2's UKI differs from boot 1's in PCR 11: the leave-initrd signature was made for another image")
	}
	if m := rootSays(t, vm, `pcr 11 ([0-9a-f]+)`); m != nil && m[1] != hex.EncodeToString(afterLeave) {
		t.Errorf("PCR 11 in the real root is %s, predicted %x after enter-initrd and leave-initrd", m[1], afterLeave)
	}
	rootSays(t, vm, `tpm unseal after switch_root: refused \(PCR 11: `)
	rootSays(t, vm, `tpm unseal after switch_root with a leave-initrd signature: refused \(PCR 15: `)
}
