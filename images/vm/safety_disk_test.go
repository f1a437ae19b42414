package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// partitionGUIDs reads the GPT partition GUIDs of a disk image on the host
// (go-diskfs, not the init's reader), in partition order, lower case.
func partitionGUIDs(t *testing.T, path string) []string {
	t.Helper()
	d, err := diskfs.Open(path, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("%s: no GPT: %+v", path, pt)
	}
	var out []string
	for _, p := range table.Partitions {
		out = append(out, strings.ToLower(p.GUID))
	}
	return out
}

// mustBeZero checks that the partition labelled label of d still holds
// only zeros (size bytes read back on the host).
func mustBeZero(t *testing.T, d *Disk, label string, size int64) {
	t.Helper()
	got := make([]byte, size)
	if err := d.ReadAt(label, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(got, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("%s on %s was written to: first non-zero byte at offset %d (%q...)", label, filepath.Base(d.Path), i, got[i:min(i+8, len(got))])
	}
}

// TestVMPlantedEphemeral is issue 10 defect 12: a second disk the kernel
// names before the node's disk (a USB stick) holds an EMPTY partition
// labelled EPHEMERAL. The first boot, without the stick, formats the
// node's volumes and writes the markers; the second boot, with the stick
// attached first, must still mount the node's EPHEMERAL (its marker is
// found), log the stick's partition as ignored, and leave every byte of it
// as it was (read back on the host). Before the fix the stick was
// formatted and mounted as /var.
func TestVMPlantedEphemeral(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "planted", TalosLayout())
	cfg := TestConfig(t, "basic.yaml")
	_, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 0)

	const stickSize = 32 * MiB
	stick, err := CreateDisk(filepath.Join(n.Dir, "stick.img"), []Partition{{Label: "EPHEMERAL", Size: stickSize}})
	if err != nil {
		t.Fatal(err)
	}
	n.Disks = append([]*Disk{stick}, n.Disks...) // attached before the node's disk: vdb, the node's vdc
	vm, r := n.BootToRoot(BootOptions{Config: cfg, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 1)
	text := vm.Console.Text()
	for _, pat := range []string{
		`cryptinit: \+[0-9.]+s devices: the node's disk is vdc: it holds META`,
		`cryptinit: \+[0-9.]+s devices: ignoring /dev/vdb1 \(label EPHEMERAL\) on disk vdb: not the node's disk; never opened nor formatted`,
	} {
		if !regexp.MustCompile(`(?m)^` + pat).MatchString(text) {
			t.Errorf("console has no line matching %q", pat)
		}
	}
	if strings.Contains(text, "more than one partition is labelled EPHEMERAL") {
		t.Errorf("console still shows the old duplicate warning")
	}
	mustBeZero(t, stick, "EPHEMERAL", stickSize)
}

// TestVMTwoStatesRefuse: two partitions labelled STATE on the node's disk.
// The boot refuses before opening either, with a banner that lists both
// (device, disk, partition GUID), and neither is written to.
func TestVMTwoStatesRefuse(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	const extra = 16 * MiB
	n := NewNode(t, a, "twostates", append(TalosLayout(), Partition{Label: "STATE", Size: extra}))
	guids := partitionGUIDs(t, n.Disks[0].Path)
	if len(guids) != 4 {
		t.Fatalf("node disk has %d partitions, want 4", len(guids))
	}
	vm := n.Boot(BootOptions{Config: TestConfig(t, "basic.yaml"), Cmdline: fastFail})
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`STATE: 2 partitions on the node's disk vdb are labelled STATE`, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("a node with two STATE partitions booted to the real root")
	}
	vm.Console.Expect(30*time.Second, `^=+$`) // the banner's two rules
	vm.Console.Expect(30*time.Second, `^=+$`)
	vm.Wait(BootTimeout)
	text := vm.Console.Text()
	for _, want := range []string{
		"/dev/vdb2 (disk vdb, partition GUID " + guids[1] + ")",
		"/dev/vdb4 (disk vdb, partition GUID " + guids[3] + ")",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("the FAIL line does not list %q: %s", want, line)
		}
		if strings.Count(text, want) < 2 {
			t.Errorf("the banner does not list %q on a line of its own:\n%s", want, vm.Console.Tail(20))
		}
	}
	// The two STATEs are both empty; neither may have been formatted.
	// (Disk.ReadAt finds a label's last partition: the extra one.)
	mustBeZero(t, n.Disks[0], "STATE", extra)
	img, err := os.Open(n.Disks[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	first := make([]byte, 1*MiB)
	if _, err := img.ReadAt(first, 2*MiB); err != nil { // META is 1 MiB at 1 MiB: the first STATE starts at 2 MiB
		t.Fatal(err)
	}
	if !bytes.Equal(first, make([]byte, len(first))) {
		t.Errorf("the first STATE partition was written to")
	}
}

// TestVMConfigOnStick: cryptinit.config=PARTLABEL=ESP:... is not read from a
// partition labelled ESP on a disk other than the node's (a stick anyone can
// label): the boot says so and falls back. Named by its partition GUID,
// the same partition is read.
func TestVMConfigOnStick(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	esp, _ := espConfigDisk(t, TestConfig(t, "basic.yaml"))
	n := NewNode(t, a, "configstick", TalosLayout(), esp)

	src := "PARTLABEL=ESP:/cryptinit/config.yaml"
	vm := n.Boot(BootOptions{Cmdline: fastFail + " cryptinit.config=" + src})
	vm.ExpectLine(`config: cryptinit\.config=` + regexp.QuoteMeta(src) + ` not read: PARTLABEL=ESP: not used: the only partitions so labelled \(vdc1 on disk vdc\) are not on the node's disk vdb \(it holds META\)`)
	vm.Expect(BootTimeout, PatFail, PatRootDone)
	vm.Wait(BootTimeout)

	byGUID := "PARTUUID=" + partitionGUIDs(t, n.Disks[1].Path)[0] + ":/cryptinit/config.yaml"
	vm = n.Boot(BootOptions{Cmdline: fastFail + " cryptinit.config=" + byGUID})
	vm.ExpectLine(`config: machine config from cryptinit\.config=` + regexp.QuoteMeta(byGUID) + `: STATE \(1 keys\), EPHEMERAL \(1 keys\)$`)
	vm.Expect(BootTimeout, PatFail, PatRootDone)
	vm.Wait(BootTimeout)
}

// TestVMLoaderDevicePartUUID boots through UEFI from an ESP partition on
// the node's disk (no harness ESP disk), with a stick attached before it
// that carries a full planted set (META, STATE, EPHEMERAL, all empty).
// META on two disks alone would stop the boot; systemd-stub's
// LoaderDevicePartUUID, read from efivarfs, names the ESP the UKI came
// from, so the node's disk is known: the stick is ignored and left as it was.
func TestVMLoaderDevicePartUUID(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	dir := t.TempDir()
	espImg := filepath.Join(dir, "esp.img")
	if err := CreateESP(espImg, 48, []ESPFile{{Src: a.UKI, Dest: "/EFI/BOOT/BOOTX64.EFI"}}); err != nil {
		t.Fatal(err)
	}
	const small = 16 * MiB
	stick := []Partition{{Label: "META", Size: 1 * MiB}, {Label: "STATE", Size: small}, {Label: "EPHEMERAL", Size: small}}
	node := append([]Partition{{Label: "EFI", Size: 48 * MiB, Fill: FillFrom(espImg)}}, TalosLayout()...)
	n := NewNode(t, a, "loader", stick, node)
	espGUID := partitionGUIDs(t, n.Disks[1].Path)[0]

	vm := n.Boot(BootOptions{Firmware: UEFI, NoESP: true})
	// root vda, the stick vdb, the node's disk vdc
	vm.ExpectLine(`devices: the node's disk is vdc: it holds the ESP the UKI booted from \(vdc1, LoaderDevicePartUUID ` + espGUID + `\)$`)
	_, line := vm.Expect(BootTimeout, PatFail, PatRootDone)
	vm.Wait(BootTimeout)
	text := vm.Console.Text()
	for _, p := range []string{"vdb1 (label META)", "vdb2 (label STATE)", "vdb3 (label EPHEMERAL)"} {
		if !strings.Contains(text, "devices: ignoring /dev/"+p+" on disk vdb") {
			t.Errorf("console does not say the stick's %s is ignored", p)
		}
	}
	if strings.Contains(line, "FAIL") && strings.Contains(line, "META") {
		t.Errorf("the boot stopped on META: %s", line)
	}
	for _, l := range []string{"META", "STATE", "EPHEMERAL"} {
		mustBeZero(t, n.Disks[0], l, n.Disks[0].Partitions[map[string]int{"META": 0, "STATE": 1, "EPHEMERAL": 2}[l]].Size)
	}
}
