package vm

import (
	"fmt"
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
	vm.ExpectLine(`^SMOKE: config absent`)
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
	// A per-test config makes the harness build and sign its own UKI.
	cfg := []byte("kind: VolumeConfig\nname: STATE\n")
	vm := n.BootSmoke(BootOptions{Firmware: SecureBoot, Config: cfg})
	vm.ExpectLine(`^SMOKE: init started`)
	vm.ExpectLine(`^SMOKE: efivar SecureBoot=1$`)
	vm.ExpectLine(`^SMOKE: efivar SetupMode=0$`)
	vm.ExpectLine(`^SMOKE: tpm .*/dev/tpm0`)
	vm.ExpectLine(fmt.Sprintf(`^SMOKE: config %d bytes`, len(cfg)))
	vm.ExpectLine(`^SMOKE: done`)
	vm.Wait(BootTimeout)
}

// TestVMSecureBootRefusesUnsigned boots the same UKI unsigned with Secure Boot
// on: the firmware must refuse it, and no init may run.
func TestVMSecureBootRefusesUnsigned(t *testing.T) {
	a := Require(t)
	t.Parallel()
	n := NewNode(t, a, "unsigned", TalosLayout())
	vm := n.BootSmoke(BootOptions{Firmware: SecureBoot, Unsigned: true})
	i, line := vm.Expect(BootTimeout, `Access Denied|Security Violation`, `^SMOKE: init started`)
	if i != 0 {
		t.Fatalf("an unsigned UKI started under Secure Boot: %s", line)
	}
	t.Logf("firmware refused it: %s", line)
	vm.Kill()
}

// TestVMSmokeRealRoot proves everything around cryptinit without it: the smoke
// /init formats STATE with the initramfs's mkfs.xfs (100 MiB, below xfsprogs'
// usual minimum) and EPHEMERAL with its mkfs.ext4, mounts them in the real
// root from root=PARTLABEL=ROOT and switch_roots; the root's markers must then
// survive into a second boot.
func TestVMSmokeRealRoot(t *testing.T) {
	a := Require(t)
	t.Parallel()
	n := NewNode(t, a, "smoke-root", TalosLayout())
	for boot := 0; boot < 2; boot++ {
		vm := n.BootSmoke(BootOptions{Cmdline: "smoke.switchroot"})
		r := vm.RootReport()
		if boot == 0 && !strings.Contains(vm.Console.Text(), "mkfs.xfs STATE ok") {
			t.Error("mkfs.xfs did not format STATE")
		}
		if m := r.Mounts["/system/state"]; m.FSType != "xfs" {
			t.Errorf("/system/state: %+v, want xfs", m)
		}
		if m := r.Mounts["/var"]; m.FSType != "ext4" {
			t.Errorf("/var: %+v, want ext4", m)
		}
		mustMarker(t, r, "/system/state", boot)
		mustMarker(t, r, "/var", boot)
		if len(r.Timeline) != 1 || r.Timeline[0].Name != "smoke" {
			t.Errorf("timeline from /run/cryptinit/timeline.json: %+v", r.Timeline)
		}
	}
}
