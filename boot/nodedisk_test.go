package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

type fakePart struct {
	label string
	size  int64
}

// sysfsMachine lays out disks (in kernel-name order) as the kernel shows
// them: /sys/class/block/<disk>/uevent, each partition's directory nested
// in its disk's, and every partition a file of its size under dev. It
// returns a real devices.Finder on that tree.
func sysfsMachine(t *testing.T, disks map[string][]fakePart) *devices.Finder {
	t.Helper()
	root := t.TempDir()
	f := &devices.Finder{Sys: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev"), Poll: 5 * time.Millisecond}
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	minor := 0
	for disk, parts := range disks {
		minor += 16
		cb := filepath.Join(f.Sys, "class", "block")
		write(filepath.Join(cb, disk, "uevent"), fmt.Sprintf("MAJOR=254\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=disk\n", minor, disk))
		write(filepath.Join(cb, disk, "size"), "0\n") // no GPT to read here
		write(filepath.Join(f.Dev, disk), "")
		for i, p := range parts {
			name := fmt.Sprintf("%s%d", disk, i+1)
			write(filepath.Join(cb, name, "uevent"), fmt.Sprintf("MAJOR=254\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=%d\nPARTNAME=%s\n", minor+i+1, name, i+1, p.label))
			write(filepath.Join(cb, name, "size"), fmt.Sprintf("%d\n", p.size/512))
			if err := os.MkdirAll(filepath.Join(cb, disk, name), 0o755); err != nil {
				t.Fatal(err)
			}
			dev := filepath.Join(f.Dev, name)
			write(dev, "")
			if err := os.Truncate(dev, p.size); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

func nodeDiskParts() []fakePart {
	return []fakePart{{"META", meta.Size}, {"STATE", 20 << 20}, {"EPHEMERAL", 20 << 20}, {"u-data", 20 << 20}}
}

// TestPlantedEphemeralIsNeverFormatted is the regression of issue 10
// defect 12: an empty partition labelled EPHEMERAL on a disk the kernel
// names first (a USB stick) was formatted and mounted as /var while the
// node's own EPHEMERAL was left alone. The boot must use the node's disk
// (the one holding META), log the stick's partition, and not write to it.
func TestPlantedEphemeralIsNeverFormatted(t *testing.T) {
	finder := sysfsMachine(t, map[string][]fakePart{
		"vda": {{"EPHEMERAL", 20 << 20}}, // the stick: empty, enumerated first
		"vdb": nodeDiskParts(),
		"vdc": {{"ROOT", 1 << 20}},
	})
	n := newNode(t, nil)
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Devices = finder
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("boot: %v\n%s", err, n.con.String())
	}
	stick, err := os.ReadFile(filepath.Join(finder.Dev, "vda1"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stick, make([]byte, len(stick))) {
		t.Errorf("the planted EPHEMERAL on vda was written to (first bytes %q)", stick[:8])
	}
	eph, err := os.ReadFile(filepath.Join(finder.Dev, "vdb3"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(eph, []byte("LUKS\xba\xbe")) {
		t.Errorf("the node's EPHEMERAL (vdb3) was not formatted: %q", eph[:8])
	}
	con := n.con.String()
	for _, want := range []string{
		"devices: the node's disk is vdb: it holds META",
		"devices: ignoring " + filepath.Join(finder.Dev, "vda1") + " (label EPHEMERAL) on disk vda: not the node's disk; never opened nor formatted",
	} {
		if !strings.Contains(con, want) {
			t.Errorf("console does not say %q:\n%s", want, con)
		}
	}
	if strings.Contains(con, "more than one partition is labelled EPHEMERAL") {
		t.Errorf("console still warns about a duplicate it resolved:\n%s", con)
	}
}

// TestTwoStatesOnTheNodeDiskRefuse: two STATE partitions on the node's disk
// stop the boot before anything is opened, with a banner listing both.
func TestTwoStatesOnTheNodeDiskRefuse(t *testing.T) {
	parts := append(nodeDiskParts(), fakePart{"STATE", 20 << 20})
	finder := sysfsMachine(t, map[string][]fakePart{"vda": parts, "vdb": {{"ROOT", 1 << 20}}})
	n := newNode(t, nil)
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Devices = finder
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) {
		t.Fatalf("boot went on: %v\n%s", err, n.con.String())
	}
	banner := strings.Join(f.Failure.Banner("10s", false), "\n")
	for _, want := range []string{
		"FAIL STATE: 2 partitions on the node's disk vda are labelled STATE",
		filepath.Join(finder.Dev, "vda2") + " (disk vda, partition GUID unknown)",
		filepath.Join(finder.Dev, "vda5") + " (disk vda, partition GUID unknown)",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner does not say %q:\n%s", want, banner)
		}
	}
	if len(n.mapped) != 0 || len(n.mkfs) != 0 || len(n.mounts) != 0 {
		t.Errorf("something was opened: mapped %v mkfs %v mounts %v", n.mapped, n.mkfs, n.mounts)
	}
}

// TestUserVolumeOffTheNodeDisk: a user volume whose config names no disk is
// looked for on the node's disk only; one whose config has Talos's
// provisioning.diskSelector may be on another disk.
func TestUserVolumeOffTheNodeDisk(t *testing.T) {
	disks := map[string][]fakePart{
		"vda": {{"u-data", 20 << 20}},
		"vdb": nodeDiskParts()[:3],
		"vdc": {{"ROOT", 1 << 20}},
	}
	n := newNode(t, nil)
	b := n.boot(t.TempDir(), basicConfig, "cryptinit.wait=200ms")
	b.Devices = sysfsMachine(t, disks)
	_, err := b.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "partition label u-data not found on the node's disk vdb (it holds META)") {
		t.Errorf("u-data without a disk selector: %v", err)
	}

	selector := strings.Replace(basicConfig, "name: data\n", "name: data\nprovisioning:\n  diskSelector:\n    match: '!system_disk'\n", 1)
	n = newNode(t, nil)
	b = n.boot(t.TempDir(), selector, "")
	b.Devices = sysfsMachine(t, disks)
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("u-data with a disk selector: %v\n%s", err, n.con.String())
	}
	if !strings.Contains(n.con.String(), "u-data=vda1") {
		t.Errorf("u-data not taken from vda:\n%s", n.con.String())
	}
}

// TestConfigSourceOnAStickNotRead: cryptinit.config=PARTLABEL=ESP:... names
// a label only a stick carries; the boot does not open it (it says why)
// and goes on without that config.
func TestConfigSourceOnAStickNotRead(t *testing.T) {
	finder := sysfsMachine(t, map[string][]fakePart{
		"vda": {{"ESP", 1 << 20}},
		"vdb": nodeDiskParts(),
		"vdc": {{"ROOT", 1 << 20}},
	})
	n := newNode(t, nil)
	b := n.boot(t.TempDir(), basicConfig, "cryptinit.config=PARTLABEL=ESP:/cryptinit/config.yaml")
	b.Devices = finder
	var opened []string
	b.Open = func(path string) (BlockDevice, int64, error) {
		opened = append(opened, filepath.Base(path))
		return openFile(path)
	}
	if _, err := b.loadMachineConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, o := range opened {
		if o == "vda1" {
			t.Errorf("the stick's ESP was opened to read a config from it (opened: %v)", opened)
		}
	}
	want := "not read: PARTLABEL=ESP: not used: the only partitions so labelled (vda1 on disk vda) are not on the node's disk vdb (it holds META)"
	if !strings.Contains(n.con.String(), want) {
		t.Errorf("console does not say %q:\n%s", want, n.con.String())
	}
}
