package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// scanFinder is a machine whose disks appear over time: Wait returns the
// next scan in which every required label is present (the last scan when
// none has them), as devices.Finder.Wait does when a disk shows up late.
type scanFinder struct {
	mu    sync.Mutex
	scans [][]devices.Block
	n     int
}

func (s *scanFinder) Wait(ctx context.Context, required []string, timeout time.Duration) (*devices.Found, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		all := s.scans[min(s.n, len(s.scans)-1)]
		s.n++
		f := &devices.Found{ByLabel: map[string]devices.Block{}, All: all}
		for _, b := range all {
			if _, dup := f.ByLabel[b.Label]; b.Label != "" && !dup {
				f.ByLabel[b.Label] = b
			} else if dup {
				f.Dups = append(f.Dups, b.Label)
			}
		}
		var missing []string
		for _, l := range required {
			if _, ok := f.ByLabel[l]; !ok {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 {
			return f, nil
		}
		if s.n >= len(s.scans) {
			return f, &devices.NotFoundError{Missing: missing, Waited: timeout, Seen: all}
		}
	}
}

// gptDisk writes a disk under dir: a GPT image at dir/<disk> naming each
// partition's label and GUID, and each partition an empty file
// dir/<disk><n> of its size. It returns the blocks a scan shows.
func gptDisk(t *testing.T, dir, disk string, parts []fakePart, guids []string) []devices.Block {
	t.Helper()
	img := filepath.Join(dir, disk)
	d, err := diskfs.Create(img, int64(len(parts)+2)<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	blocks := []devices.Block{{Name: disk, DevType: "disk", Path: img, SizeByte: int64(len(parts)+2) << 20}}
	for i, p := range parts {
		start := uint64(2048 * (i + 1))
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: start + 2047,
			Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: p.label, GUID: guids[i]})
		name := fmt.Sprintf("%s%d", disk, i+1)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, p.size); err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, devices.Block{Name: name, Label: p.label, PartN: i + 1, Disk: disk, DevType: "partition", Path: path, SizeByte: p.size})
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	d.Close()
	return blocks
}

// setLoaderPartUUID makes root look booted through UEFI by systemd-stub
// from the partition with GUID guid.
func setLoaderPartUUID(t *testing.T, root, guid string) {
	t.Helper()
	dir := filepath.Join(root, tpm.EFIVarsPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	v := []byte{6, 0, 0, 0}
	for _, c := range utf16.Encode([]rune(strings.ToUpper(guid) + "\x00")) {
		v = append(v, byte(c), byte(c>>8))
	}
	if err := os.WriteFile(filepath.Join(dir, devices.LoaderDevicePartUUIDVar), v, 0o644); err != nil {
		t.Fatal(err)
	}
}

const nodeESPGUID = "e5e5e5e5-0000-4000-8000-000000000001"

// plantedStick is a USB stick carrying a full planted set (META, STATE,
// EPHEMERAL, u-data), all empty, and the node's disk holding the ESP the
// UKI booted from and the same labels.
func plantedStick(t *testing.T, dir string) (stick, node []devices.Block) {
	stick = gptDisk(t, dir, "sda", []fakePart{{"META", meta.Size}, {"STATE", 20 << 20}, {"EPHEMERAL", 20 << 20}, {"u-data", 20 << 20}},
		[]string{"5a000000-0000-4000-8000-000000000001", "5a000000-0000-4000-8000-000000000002", "5a000000-0000-4000-8000-000000000003", "5a000000-0000-4000-8000-000000000004"})
	node = gptDisk(t, dir, "vda", []fakePart{{"ESP", 1 << 20}, {"META", meta.Size}, {"STATE", 20 << 20}, {"EPHEMERAL", 20 << 20}, {"u-data", 20 << 20}},
		[]string{nodeESPGUID, "5b000000-0000-4000-8000-000000000002", "5b000000-0000-4000-8000-000000000003", "5b000000-0000-4000-8000-000000000004", "5b000000-0000-4000-8000-000000000005"})
	return stick, node
}

func untouched(t *testing.T, blocks []devices.Block) {
	t.Helper()
	for _, b := range blocks {
		if b.DevType != "partition" {
			continue
		}
		data, err := os.ReadFile(b.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, make([]byte, len(data))) {
			t.Errorf("the stick's %s (%s) was written to", b.Name, b.Label)
		}
	}
}

// TestPlantedSetBeforeTheESPDisk is the race of issue 10 defect 12: a
// stick with a full planted set is seen first, the disk holding the ESP
// the UKI booted from (LoaderDevicePartUUID) only on the next scan. The
// boot must wait for the ESP's disk and use it, never the stick.
func TestPlantedSetBeforeTheESPDisk(t *testing.T) {
	dir := t.TempDir()
	stick, node := plantedStick(t, dir)
	n := newNode(t, nil)
	root := t.TempDir()
	b := n.boot(root, basicConfig, "root=/dev/fake-root")
	setLoaderPartUUID(t, root, nodeESPGUID)
	b.Devices = &scanFinder{scans: [][]devices.Block{stick, append(append([]devices.Block{}, stick...), node...)}}
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("boot: %v\n%s", err, n.con.String())
	}
	untouched(t, stick)
	for _, p := range node[3:] { // STATE, EPHEMERAL, u-data
		data, err := os.ReadFile(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("LUKS\xba\xbe")) {
			t.Errorf("the node's %s (%s) was not formatted", p.Label, p.Name)
		}
	}
	want := "devices: the node's disk is vda: it holds the ESP the UKI booted from (vda1, LoaderDevicePartUUID " + nodeESPGUID + ")"
	if !strings.Contains(n.con.String(), want) {
		t.Errorf("console does not say %q:\n%s", want, n.con.String())
	}
}

// TestESPDiskNeverAppears: the disk the UKI booted from never shows up,
// only a stick with a full planted set. At cryptinit.wait= the boot
// refuses with a banner naming the GUID it waited for and the disks seen,
// and writes nothing.
func TestESPDiskNeverAppears(t *testing.T) {
	dir := t.TempDir()
	stick, _ := plantedStick(t, dir)
	n := newNode(t, nil)
	root := t.TempDir()
	b := n.boot(root, basicConfig, "root=/dev/fake-root cryptinit.wait=200ms")
	setLoaderPartUUID(t, root, nodeESPGUID)
	b.Devices = &scanFinder{scans: [][]devices.Block{stick}}
	start := time.Now()
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) {
		t.Fatalf("boot went on: %v\n%s", err, n.con.String())
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("refused after %s, before cryptinit.wait=200ms", d)
	}
	banner := strings.Join(f.Failure.Banner("10s", false), "\n")
	for _, want := range []string{
		"the ESP the UKI booted from (LoaderDevicePartUUID " + nodeESPGUID + ") is on no disk seen after ",
		"seen: disks sda",
		"will not guess which disk is the node's",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner does not say %q:\n%s", want, banner)
		}
	}
	untouched(t, stick)
	if len(n.mapped) != 0 || len(n.mkfs) != 0 || len(n.mounts) != 0 {
		t.Errorf("something was opened: mapped %v mkfs %v mounts %v", n.mapped, n.mkfs, n.mounts)
	}
}
