package vm

import (
	"regexp"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// TestVMTPMSecureBoot boots a node with Secure Boot and a software TPM using
// configs/tpm.yaml: STATE's TPM key (bound to PCR 7, with a signed PCR 11
// policy from the UKI's .pcrsig) and EPHEMERAL's TPM key locked to STATE are
// sealed on the first boot and unsealed on the second.
func TestVMTPMSecureBoot(t *testing.T) {
	a := RequireInit(t)
	if a.PCRKey == "" {
		testenv.Missing(t, "the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	t.Parallel()
	n := NewNode(t, a, "tpm", TalosLayout())
	n.TPM = true
	cfg := ProjectConfig(t, "tpm.yaml")
	for boot := 0; boot < 2; boot++ {
		vm, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
		mustStateAndEphemeral(t, r, boot)
		if boot == 1 {
			// The TPM key itself opened both, not a fallback slot.
			mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
			mustSay(t, vm, `EPHEMERAL: opened with slot 0 \(tpm`)
		}
	}
	// Without Secure Boot and the signed UKI (direct kernel boot: PCR 7 and
	// PCR 11 differ) the TPM must refuse: STATE falls back to its nodeID slot,
	// EPHEMERAL to its recovery passphrase (slot 31).
	vm, r := n.BootToRoot(BootOptions{Firmware: Direct, Config: cfg, Cmdline: fastFail})
	mustMarker(t, r, "/system/state", 2)
	mustSay(t, vm, `STATE: opened with slot 1 \(nodeID`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 31 \(static`)
	for _, vol := range []string{"STATE", "EPHEMERAL"} {
		slots, err := n.Disks[0].LUKSKeyslots(vol)
		if err != nil || len(slots) < 2 || slots[0] != 0 {
			t.Errorf("%s keyslots %v %v: want the TPM key in slot 0 and its fallback", vol, slots, err)
		}
	}
}

// mustSay checks that cryptinit printed a line matching pattern in this boot.
func mustSay(t *testing.T, vm *VM, pattern string) {
	t.Helper()
	re := regexp.MustCompile(`cryptinit: .*` + pattern)
	if !re.MatchString(vm.Console.Text()) {
		t.Errorf("cryptinit never said %q in %s", pattern, vm.Log)
	}
}
