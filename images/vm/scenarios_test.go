package vm

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// fastFail shortens the waits that matter only to people, not tests.
const fastFail = "cryptinit.reboot-delay=1s"

func mustMount(t *testing.T, r *RootReport, point, mapper string) {
	t.Helper()
	if err := r.Mounted(point, mapper); err != nil {
		t.Error(err)
	}
}

func mustMarker(t *testing.T, r *RootReport, point string, found int) {
	t.Helper()
	m, ok := r.Markers[point]
	if !ok {
		t.Errorf("no marker report for %s", point)
		return
	}
	if m.Found != found || m.Wrote != found+1 {
		t.Errorf("%s: marker found %d wrote %d, want found %d wrote %d", point, m.Found, m.Wrote, found, found+1)
	}
}

// mustStateAndEphemeral checks that STATE and EPHEMERAL are mounted through
// their dm-crypt mappings and that both markers were found found times
// before (and written once more).
func mustStateAndEphemeral(t *testing.T, r *RootReport, found int) {
	t.Helper()
	mustMount(t, r, "/system/state", "luks2-STATE")
	mustMount(t, r, "/var", "luks2-EPHEMERAL")
	mustMarker(t, r, "/system/state", found)
	mustMarker(t, r, "/var", found)
}

// TestVMFirstAndSecondBoot is scenarios (a) and (b): the first boot formats
// STATE (nodeID key) and EPHEMERAL (static key), mounts them and switch_roots;
// the second boot reopens the same disks and finds the markers written.
func TestVMFirstAndSecondBoot(t *testing.T) {
	firstAndSecondBoot(t, "basic", 1)
}

// firstAndSecondBoot boots a fresh node with basic.yaml twice on cpus
// vCPUs: both volumes mounted through dm-crypt each time, the second boot
// finds the first's markers. It returns each boot's console and report.
func firstAndSecondBoot(t *testing.T, name string, cpus int) (consoles []string, reports []*RootReport) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, name, TalosLayout())
	cfg := TestConfig(t, "basic.yaml")
	for boot := 0; boot < 2; boot++ {
		m, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail, CPUs: cpus})
		mustStateAndEphemeral(t, r, boot)
		t.Logf("boot %d reached the real root in %s", boot+1, r.Elapsed)
		consoles, reports = append(consoles, m.Console.Text()), append(reports, r)
	}
	return consoles, reports
}

// TestVMStateFromMeta is scenario (c): after a boot with the machine config,
// a boot without any config opens STATE from the encryption config that
// cryptinit saved in META.
func TestVMStateFromMeta(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "meta", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "locked.yaml"), Cmdline: fastFail})
	mustMount(t, r, "/system/state", "luks2-STATE")
	mustMarker(t, r, "/system/state", 0)
	vm := n.Boot(BootOptions{Cmdline: fastFail}) // no machine config at all
	r = vm.RootReport()
	mustMount(t, r, "/system/state", "luks2-STATE")
	mustMarker(t, r, "/system/state", 1)
}

// TestVMPlainEphemeralKept is scenario (d): EPHEMERAL already holds a plain
// ext4 filesystem while the config asks for encryption: cryptinit must not
// format it, and must say so. The host checks the ext4 superblock survived.
func TestVMPlainEphemeralKept(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	parts := TalosLayout()
	parts[2].Fill = FillMkfs("ext4", "-q", "-F", "-L", "EPHEMERAL")
	n := NewNode(t, a, "plain", parts)
	vm := n.Boot(BootOptions{Config: TestConfig(t, "encrypted-ephemeral.yaml"), Cmdline: fastFail})
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`EPHEMERAL: .*not empty.*ext4`, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("booted to the real root with an unencrypted EPHEMERAL although the config encrypts it")
	}
	t.Logf("cryptinit said: %s", line)
	vm.Wait(BootTimeout) // the failure reboots: QEMU exits
	sb := make([]byte, 2)
	if err := n.Disks[0].ReadAt("EPHEMERAL", sb, 1024+56); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sb, []byte{0x53, 0xef}) {
		t.Errorf("the ext4 superblock magic on EPHEMERAL is gone (%x): the partition was formatted", sb)
	}
}

// TestVMRecoveryPrompt is scenario (e): when no configured key opens
// EPHEMERAL, the console prompt takes a typed recovery passphrase and the boot
// goes on; when nothing is typed, the failure banner shows and the VM reboots.
func TestVMRecoveryPrompt(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "prompt", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "recovery.yaml"), Cmdline: fastFail})
	mustMarker(t, r, "/var", 0)

	wrong := string(TestConfig(t, "recovery-wrong.yaml"))
	vm := n.Boot(BootOptions{Config: []byte(strings.ReplaceAll(wrong, "WRONG_KEY", "wrong-one")),
		Cmdline: fastFail + " cryptinit.prompt-timeout=60s"})
	vm.ExpectPrompt(PatPrompt + `.*EPHEMERAL`)
	vm.Type("typed-recovery-passphrase\n")
	r = vm.RootReport()
	mustMount(t, r, "/var", "luks2-EPHEMERAL")
	mustMarker(t, r, "/var", 1)
	if strings.Contains(vm.Console.Text(), "typed-recovery-passphrase") {
		t.Error("the typed passphrase was echoed or logged on the console")
	}

	vm = n.Boot(BootOptions{Config: []byte(strings.ReplaceAll(wrong, "WRONG_KEY", "wrong-two")),
		Cmdline: fastFail + " cryptinit.prompt-timeout=3s"})
	vm.ExpectPrompt(PatPrompt)
	line := vm.ExpectFailureAndReboot()
	if !strings.Contains(line, "EPHEMERAL") {
		t.Errorf("failure banner does not name EPHEMERAL: %s", line)
	}
}

// TestVMKeyRotation is scenario (f): EPHEMERAL's static key goes oldkey ->
// both -> newkey over three boots (configs/static-rotation-{1,2,3}.yaml), each
// boot opening the volume and keeping its data.
func TestVMKeyRotation(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "rotate", TalosLayout())
	for i, name := range []string{"static-rotation-1.yaml", "static-rotation-2.yaml", "static-rotation-3.yaml"} {
		_, r := n.BootToRoot(BootOptions{Config: ProjectConfig(t, name), Cmdline: fastFail})
		mustMount(t, r, "/var", "luks2-EPHEMERAL")
		mustMarker(t, r, "/var", i)
	}
	// On disk, only slot 1 (newkey) is left.
	if slots, err := n.Disks[0].LUKSKeyslots("EPHEMERAL"); err != nil || len(slots) != 1 || slots[0] != 1 {
		t.Errorf("EPHEMERAL keyslots after rotation: %v %v, want [1]", slots, err)
	}
	// Only newkey remains: a boot with oldkey alone must not open EPHEMERAL.
	old := ProjectConfig(t, "static-rotation-1.yaml")
	vm := n.Boot(BootOptions{Config: old, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	line := vm.ExpectFailureAndReboot()
	if !strings.Contains(line, "EPHEMERAL") {
		t.Errorf("failure banner does not name EPHEMERAL: %s", line)
	}
}

// TestVMLockToStateWiped is scenario (g): EPHEMERAL is locked to STATE; after
// STATE is wiped (and formatted again with a new salt) EPHEMERAL must not be
// opened, and the reason is printed.
func TestVMLockToStateWiped(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "locked", TalosLayout())
	cfg := TestConfig(t, "locked.yaml")
	_, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
	mustMount(t, r, "/var", "luks2-EPHEMERAL")
	if err := n.Disks[0].WipeAll("STATE"); err != nil {
		t.Fatal(err)
	}
	vm := n.Boot(BootOptions{Config: cfg, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`EPHEMERAL: `, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("booted to the real root although STATE was wiped:\n%s", vm.Console.Tail(30))
	}
	_, reason := vm.Expect(30*time.Second, `slot 0 \(nodeID\+lockToSTATE\): failed: .*locked to STATE`)
	t.Logf("cryptinit said: %s / %s", line, strings.TrimSpace(reason))
	vm.Wait(BootTimeout)
	if strings.Contains(vm.Console.Text(), "luks2-EPHEMERAL") && strings.Contains(vm.Console.Text(), RootLinePrefix+"mount /var") {
		t.Error("EPHEMERAL was mounted after STATE was wiped")
	}
}

// TestVMStagedWipeEncrypts is scenario (h): EPHEMERAL starts unencrypted;
// the operator stages an encrypted config and a wipe request in META
// (cryptctl meta request-wipe, what talosctl reset --system-labels-to-wipe
// asks for); the next boot wipes EPHEMERAL and encrypts it.
func TestVMStagedWipeEncrypts(t *testing.T) {
	a := RequireInit(t)
	if a.Cryptctl == "" {
		t.Fatal("out/bin/cryptctl is missing: the image build could not build ./cmd/cryptctl")
	}
	t.Parallel()
	n := NewNode(t, a, "staged", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "plain-ephemeral.yaml"), Cmdline: fastFail})
	if m, ok := r.Mounts["/var"]; !ok || strings.Contains(m.Source, "mapper") {
		t.Fatalf("first boot: /var should be a plain filesystem, got %+v", r.Mounts["/var"])
	}
	mustMarker(t, r, "/var", 0)
	err := n.Disks[0].EditPartition("META", func(file string) error {
		out, err := exec.Command(a.Cryptctl, "meta", "request-wipe", "--init", "--volume", "EPHEMERAL", "--disk", n.Disks[0].Path, file).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, r = n.BootToRoot(BootOptions{Config: TestConfig(t, "encrypted-ephemeral.yaml"), Cmdline: fastFail})
	mustMount(t, r, "/var", "luks2-EPHEMERAL")
	mustMarker(t, r, "/var", 0) // fresh encrypted volume
	if slots, err := n.Disks[0].LUKSKeyslots("EPHEMERAL"); err != nil || len(slots) != 1 {
		t.Errorf("EPHEMERAL after the staged wipe: keyslots %v, %v", slots, err)
	}
}

// TestVMUserVolume boots configs/nodeid.yaml: STATE, EPHEMERAL and the user
// volume u-data on a second disk, all nodeID keys (the user volume and
// EPHEMERAL locked to STATE, u-data as ext4 at /var/mnt/data), twice.
func TestVMUserVolume(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "user", TalosLayout(), []Partition{{Label: "u-data", Size: 64 * MiB}})
	cfg := ProjectConfig(t, "nodeid.yaml")
	for boot := 0; boot < 2; boot++ {
		_, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
		mustMount(t, r, "/system/state", "luks2-STATE")
		mustMount(t, r, "/var", "luks2-EPHEMERAL")
		mustMount(t, r, "/var/mnt/data", "luks2-u-data")
		if m := r.Mounts["/var/mnt/data"]; m.FSType != "ext4" {
			t.Errorf("/var/mnt/data is %q, want ext4", m.FSType)
		}
		mustMarker(t, r, "/var/mnt/data", boot)
	}
}

// TestVMTwoCPUs boots scenarios (a) and (b) on two vCPUs: EPHEMERAL, whose
// config comes with the image and whose key is not lockToSTATE, unlocks
// alongside STATE (formatted on the first boot, reopened on the second),
// and nothing is lost.
func TestVMTwoCPUs(t *testing.T) {
	consoles, reports := firstAndSecondBoot(t, "twocpus", 2)
	for i, r := range reports {
		if !strings.Contains(consoles[i], "volumes: EPHEMERAL unlock alongside STATE (2 CPUs") {
			t.Errorf("boot %d: EPHEMERAL did not unlock alongside STATE", i+1)
		}
		var stateKDF, ephKDF *Step
		for j, s := range r.Timeline {
			switch {
			case s.Name == "kdf" && s.Volume == "STATE":
				stateKDF = &r.Timeline[j]
			case s.Name == "kdf" && s.Volume == "EPHEMERAL":
				ephKDF = &r.Timeline[j]
			}
		}
		if stateKDF == nil || ephKDF == nil || ephKDF.Start > stateKDF.Start+stateKDF.Duration {
			t.Errorf("boot %d: EPHEMERAL's KDF did not overlap STATE's: %+v %+v", i+1, stateKDF, ephKDF)
		}
	}
}
