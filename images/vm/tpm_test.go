package vm

import (
	"testing"
)

// TestVMTPMSecureBoot boots a node with Secure Boot and a software TPM using
// configs/tpm.yaml: STATE's TPM key (bound to PCR 7, with a signed PCR 11
// policy from the UKI's .pcrsig) and EPHEMERAL's TPM key locked to STATE are
// sealed on the first boot and unsealed on the second.
func TestVMTPMSecureBoot(t *testing.T) {
	a := RequireInit(t)
	if a.PCRKey == "" {
		t.Skip("the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	t.Parallel()
	n := NewNode(t, a, "tpm", TalosLayout())
	n.TPM = true
	cfg := ProjectConfig(t, "tpm.yaml")
	for boot := 0; boot < 2; boot++ {
		_, r := n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: cfg, Cmdline: fastFail})
		mustMount(t, r, "/system/state", "luks2-STATE")
		mustMount(t, r, "/var", "luks2-EPHEMERAL")
		mustMarker(t, r, "/system/state", boot)
		mustMarker(t, r, "/var", boot)
	}
	for _, vol := range []string{"STATE", "EPHEMERAL"} {
		slots, err := n.Disks[0].LUKSKeyslots(vol)
		if err != nil || len(slots) < 2 || slots[0] != 0 {
			t.Errorf("%s keyslots %v %v: want the TPM key in slot 0 and its fallback", vol, slots, err)
		}
	}
}
