package vm

import (
	"strings"
	"testing"
)

// TestVMSmokeDirect proves the pipeline without cryptinit: Debian's kernel,
// our modules (dm-crypt, xts, virtio...), GPT labels seen by the guest, the
// SMBIOS UUID, and the initramfs overlay mechanism every scenario relies on.
func TestVMSmokeDirect(t *testing.T) {
	a := Require(t)
	t.Parallel()
	n := NewNode(t, a, "smoke-direct", TalosLayout())
	vm := n.BootSmoke(BootOptions{Firmware: Direct})
	vm.ExpectLine(`^SMOKE: init started`)
	line := vm.ExpectLine(`^SMOKE: modules loaded`)
	vm.ExpectLine(`^SMOKE: efivar SecureBoot=absent`)
	vm.ExpectLine(`^SMOKE: done`)
	out := vm.Console.Text()
	for _, want := range []string{"partname=META", "partname=STATE", "partname=EPHEMERAL", "partname=ROOT", "crypto xts yes", "product_uuid " + n.UUID} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	// efivarfs refuses to load without EFI (direct boot); nothing else may fail.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "SMOKE: insmod") && !strings.Contains(l, "efivarfs") {
			t.Errorf("%s (%s)", l, line)
		}
	}
	vm.Wait(BootTimeout)
}

// TestVMSmokeSecureBoot boots the signed UKI with our keys enrolled in OVMF and
// a software TPM: Secure Boot must be on, Setup Mode off, /dev/tpm0 present.
func TestVMSmokeSecureBoot(t *testing.T) {
	a := Require(t)
	t.Parallel()
	n := NewNode(t, a, "smoke-sb", TalosLayout())
	n.TPM = true
	vm := n.BootSmoke(BootOptions{Firmware: SecureBoot})
	vm.ExpectLine(`^SMOKE: init started`)
	vm.ExpectLine(`^SMOKE: efivar SecureBoot=1$`)
	vm.ExpectLine(`^SMOKE: efivar SetupMode=0$`)
	vm.ExpectLine(`^SMOKE: tpm .*/dev/tpm0`)
	vm.ExpectLine(`^SMOKE: done`)
	vm.Wait(BootTimeout)
}
