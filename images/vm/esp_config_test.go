package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// espConfigDisk is a partition, labelled ESP, that holds a
// FAT filesystem (mkfs.vfat + mtools, as a real ESP) with the machine config
// at /cryptinit/config.yaml. It also returns the FAT volume serial, the
// filesystem's UUID=, as blkid names it.
func espConfigDisk(t *testing.T, config []byte) ([]Partition, string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(src, config, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "esp.img")
	if err := CreateESP(img, 40, []ESPFile{{Src: src, Dest: "/cryptinit/config.yaml"}}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", img).Output()
	if err != nil {
		t.Fatalf("blkid on %s: %v (a broken FAT image, or util-linux's blkid missing: it names the ESP's UUID)", img, err)
	}
	return []Partition{{Label: "ESP", Size: 40 * MiB, Fill: FillFrom(img)}}, strings.TrimSpace(string(out))
}

// rootPartUUID reads the GPT partition GUID go-diskfs gave the node's ROOT
// partition (read here with go-diskfs, not with the init's own GPT reader).
func rootPartUUID(t *testing.T, n *Node) string {
	t.Helper()
	d, err := diskfs.Open(n.rootDisk, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok || len(table.Partitions) != 1 || table.Partitions[0].Name != "ROOT" || table.Partitions[0].GUID == "" {
		t.Fatalf("root disk table: %+v", pt)
	}
	return table.Partitions[0].GUID
}

// rootFSUUID is the filesystem UUID of out/root.ext4 as blkid reports it.
func rootFSUUID(t *testing.T, a *Artifacts) string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", a.RootFS).Output()
	if err != nil {
		t.Fatalf("blkid on %s: %v (a broken root image, or util-linux's blkid missing: it names the root's UUID)", a.RootFS, err)
	}
	u := strings.TrimSpace(string(out))
	if len(u) != 36 {
		t.Fatalf("blkid UUID of %s: %q", a.RootFS, u)
	}
	return u
}

// TestVMConfigOnESP boots a node with no config in the image and
// cryptinit.config=PARTLABEL=ESP:/cryptinit/config.yaml: the init loads
// vfat (+ its codepage and iocharset tables), reads basic.yaml from the
// FAT partition and opens and mounts STATE and EPHEMERAL with it. A config
// on a partition is not authenticated (whoever holds the disk can write
// it): it opens volumes but never formats them, so a boot with the same
// config in the image formats them first, and the ESP boot says so. A second
// boot names a file missing from that partition: the init says which source
// failed and falls back as boot/config.go documents (no embedded config ->
// STATE from META, the others from the copy on STATE) and still mounts both.
//
// The same boots cover root=PARTUUID= (first boot, the ROOT partition's
// GPT GUID) and root=UUID= (second boot, root.ext4's filesystem UUID in upper
// case): appended words override the image's root=PARTLABEL=ROOT. A third
// boot names a GUID no partition has and must fail saying what it saw.
func TestVMConfigOnESP(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	esp, espUUID := espConfigDisk(t, TestConfig(t, "basic.yaml"))
	// The ESP is on the node's disk, as Talos installs it: a PARTLABEL=
	// config source on another disk is not read (boot/devices ConfigSourceByLabel).
	n := NewNode(t, a, "espconfig", append(TalosLayout(), esp...))
	partUUID, fsUUID := rootPartUUID(t, n), rootFSUUID(t, a)
	rootMounted := `cryptinit: \+[0-9.]+s root: /dev/vd[a-z]1 \(ext4, ro\) mounted at /sysroot`

	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "basic.yaml"), Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 0)

	src := "PARTLABEL=ESP:/cryptinit/config.yaml"
	vm := n.Boot(BootOptions{Cmdline: fastFail + " cryptinit.config=" + src + " root=PARTUUID=" + partUUID})
	vm.ExpectLine(`config: machine config from cryptinit\.config=` + regexp.QuoteMeta(src) + `: STATE \(1 keys\), EPHEMERAL \(1 keys\)$`)
	vm.ExpectLine(`config: cryptinit\.config=` + regexp.QuoteMeta(src) + ` is not authenticated: it opens volumes but never formats them or changes their key slots$`)
	vm.ExpectLine(rootMounted)
	r = vm.RootReport()
	mustStateAndEphemeral(t, r, 1)

	missing := "PARTLABEL=ESP:/cryptinit/missing.yaml"
	vm = n.Boot(BootOptions{Cmdline: fastFail + " cryptinit.config=" + missing + " root=UUID=" + strings.ToUpper(fsUUID)})
	vm.ExpectLine(`config: cryptinit\.config=` + regexp.QuoteMeta(missing) + ` not read: .*missing\.yaml: no such file or directory; trying the embedded config`)
	vm.ExpectLine(`config: no machine config in the image or on the command line`)
	vm.ExpectLine(`config: machine config from copy on STATE .*: STATE \(1 keys\), EPHEMERAL \(1 keys\)$`)
	vm.ExpectLine(rootMounted)
	r = vm.RootReport()
	mustStateAndEphemeral(t, r, 2)

	// The config by the ESP's filesystem UUID (the FAT serial, lower case
	// here), and a root GUID no partition has: the boot reads the config,
	// looks for the root until cryptinit.wait= has passed, then stops with
	// a banner that lists the partition GUIDs it saw, the real ROOT's
	// among them.
	byUUID := "UUID=" + strings.ToLower(espUUID) + ":/cryptinit/config.yaml"
	absent := "00000000-0000-4000-8000-00000000c0de"
	vm = n.Boot(BootOptions{Cmdline: fastFail + " cryptinit.wait=3s cryptinit.config=" + byUUID + " root=PARTUUID=" + absent})
	vm.ExpectLine(`config: machine config from cryptinit\.config=` + regexp.QuoteMeta(byUUID) + `: STATE \(1 keys\), EPHEMERAL \(1 keys\)$`)
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`boot: PARTUUID=`+absent+`: no device has that partition GUID; seen: .*\(waited 3s`, PatRootDone)
	if !strings.Contains(strings.ToLower(line), "vda1 partuuid="+strings.ToLower(partUUID)) {
		t.Errorf("the failure does not list the ROOT partition's GUID %s: %s", partUUID, line)
	}
	vm.Wait(BootTimeout)
}
