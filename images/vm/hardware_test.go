package vm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The hardware matrix: each test boots what the universal UKI holds
// (UniversalUKI: its own kernel, initramfs and command line, see FromUKI)
// on one kind of hardware a server has, and checks that STATE and
// EPHEMERAL are opened through dm-crypt on it. Boots are direct kernel
// boots: the UKI's payload is under test, not OVMF's drivers, and a direct
// boot costs half a UEFI one under TCG.

// hardwareDisks boots a fresh node whose data disk is on bus twice: the
// first boot formats STATE and EPHEMERAL, the second unlocks them again.
// Both mappings must sit on a partition named like part (the bus's
// device names), so the volumes really were found on that bus.
func hardwareDisks(t *testing.T, bus DiskBus, part string) {
	a := RequireUniversal(t)
	t.Parallel()
	n := NewNode(t, a, "hw-"+bus.String(), TalosLayout())
	cfg := TestConfig(t, "basic.yaml")
	re := regexp.MustCompile(`^` + part + `$`)
	for boot := 0; boot < 2; boot++ {
		_, r := n.BootToRoot(BootOptions{Bus: bus, Config: cfg, Cmdline: fastFail})
		mustStateAndEphemeral(t, r, boot)
		for _, m := range []string{"luks2-STATE", "luks2-EPHEMERAL"} {
			if d, ok := r.DM[m]; !ok || !re.MatchString(strings.TrimSpace(d.Slaves)) {
				t.Errorf("boot %d: %s sits on %q, want a %s partition (%s)", boot+1, m, d.Slaves, bus, part)
			}
		}
		t.Logf("%s: boot %d reached the real root in %s", bus, boot+1, r.Elapsed.Round(100*time.Millisecond))
	}
}

// TestVMHardwareNVMe: the volumes on an NVMe disk (nvme0n1p*).
func TestVMHardwareNVMe(t *testing.T) { hardwareDisks(t, NVMe, `nvme0n1p[0-9]+`) }

// TestVMHardwareAHCI: the volumes on a SATA disk on an AHCI controller (sd*).
func TestVMHardwareAHCI(t *testing.T) { hardwareDisks(t, AHCI, `sd[a-z][0-9]+`) }

// TestVMHardwareVirtioSCSI: the volumes on a virtio-scsi disk (sd*).
func TestVMHardwareVirtioSCSI(t *testing.T) { hardwareDisks(t, VirtioSCSI, `sd[a-z][0-9]+`) }

// TestVMHardwareUSBStorage: the volumes on a USB stick on xHCI (sd*), which
// the kernel enumerates last: the boot must wait for it.
func TestVMHardwareUSBStorage(t *testing.T) { hardwareDisks(t, USBStorage, `sd[a-z][0-9]+`) }

// TestVMHardwareKMSNICs boots configs/kms.yaml with the KMS reached through
// each NIC the universal image carries: the first boot on virtio-net seals
// both volume keys with the KMS, the second, on an Intel e1000e alone,
// unseals them through it (STATE opened with its kms slot).
func TestVMHardwareKMSNICs(t *testing.T) {
	a := RequireUniversal(t)
	t.Parallel()
	port, _, _ := startKMS(t, a)
	cfg := []byte(strings.ReplaceAll(string(ProjectConfig(t, "kms.yaml")), "10.0.2.2:4050", fmt.Sprintf("10.0.2.2:%d", port)))
	n := NewNode(t, a, "hw-nic", TalosLayout())
	for boot, nic := range []string{"virtio-net-pci", "e1000e"} {
		vm, r := n.BootToRoot(BootOptions{Config: cfg, Net: true, NIC: nic, Cmdline: fastFail})
		mustStateAndEphemeral(t, r, boot)
		if text := vm.Console.Text(); !strings.Contains(text, `"step":"network"`) || !strings.Contains(text, "(kms") {
			t.Errorf("%s: no network step or no kms key in the log", nic)
		}
		if boot == 1 {
			mustSay(t, vm, `STATE: opened with slot 0 \(kms`)
		}
		t.Logf("%s: boot %d reached the real root in %s", nic, boot+1, r.Elapsed.Round(100*time.Millisecond))
	}
}

// TestVMHardwareUSBKeyboard: when no configured key opens EPHEMERAL, the
// recovery passphrase typed on a USB keyboard (QEMU's sendkey on a usb-kbd,
// into the VT, not the serial console) opens it. i8042.nokbd takes the
// PS/2 keyboard away, so the keys can only have come through USB.
func TestVMHardwareUSBKeyboard(t *testing.T) {
	a := RequireUniversal(t)
	t.Parallel()
	n := NewNode(t, a, "hw-kbd", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "recovery.yaml"), Cmdline: fastFail})
	mustMarker(t, r, "/var", 0)

	wrong := strings.ReplaceAll(string(TestConfig(t, "recovery-wrong.yaml")), "WRONG_KEY", "wrong-one")
	vm := n.Boot(BootOptions{Config: []byte(wrong), USBKeyboard: true,
		Cmdline: fastFail + " i8042.nokbd cryptinit.prompt-timeout=120s"})
	vm.ExpectPrompt(PatPrompt + `.*EPHEMERAL`)
	// A margin for the keyboard's USB enumeration, which nothing in the boot
	// waits for; input typed before the prompt was flushed already.
	time.Sleep(2 * time.Second)
	vm.SendKeys("typed-recovery-passphrase\n")
	r = vm.RootReport()
	mustMount(t, r, "/var", "luks2-EPHEMERAL")
	mustMarker(t, r, "/var", 1)
	if strings.Contains(vm.Console.Text(), "typed-recovery-passphrase") {
		t.Error("the typed passphrase was echoed or logged on the console")
	}
	t.Logf("USB keyboard boot reached the real root in %s", r.Elapsed.Round(100*time.Millisecond))
}

// TestKeyNames: text becomes the key names QEMU's sendkey takes.
func TestKeyNames(t *testing.T) {
	got, err := KeyNames("aZ9 -_\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := "a shift-z 9 spc minus shift-minus ret"; strings.Join(got, " ") != want {
		t.Errorf("got %q, want %q", strings.Join(got, " "), want)
	}
	if _, err := KeyNames("é"); err == nil {
		t.Error("no error for a character sendkey cannot type")
	}
}

// TestDiskBusArgs: each bus attaches a disk with its own controller once.
func TestDiskBusArgs(t *testing.T) {
	for _, tc := range []struct {
		bus  DiskBus
		want string
	}{
		{VirtioBlk, "-device virtio-blk-pci,drive=d0"},
		{NVMe, "-device nvme,drive=d0,serial=cryptinit0"},
		{AHCI, "-device ahci,id=ahci0 -device ide-hd,drive=d0,bus=ahci0.0"},
		{VirtioSCSI, "-device virtio-scsi-pci,id=scsi0 -device scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0"},
		{USBStorage, "-device qemu-xhci,id=xhci -device usb-storage,drive=d0,bus=xhci.0"},
	} {
		got := strings.Join(append(tc.bus.controllers(true, false), "-device", tc.bus.device("d0", 0)), " ")
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.bus, got, tc.want)
		}
	}
	if got := strings.Join(USBStorage.controllers(true, true), " "); strings.Count(got, "qemu-xhci") != 1 {
		t.Errorf("USB disk and keyboard: %q, want one xHCI controller", got)
	}
}
