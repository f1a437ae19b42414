package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

const ephPartUUID = "a19d880f-05fc-4d3b-a006-743f0f84911e"

// gptImage writes a whole-disk image whose GPT has a META and an EPHEMERAL
// partition (go-diskfs, a writer independent of ours).
func gptImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(path, 4<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 4095, Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: "META", GUID: "0fc63daf-8483-4772-8e79-3d69d8477de4"},
		{Index: 2, Start: 4096, End: 6143, Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: "EPHEMERAL", GUID: ephPartUUID},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	return path
}

func metaRequests(t *testing.T, path string) []meta.WipeRequest {
	t.Helper()
	m, err := metaRead(path)
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := meta.WipeRequests(m)
	if err != nil {
		t.Fatal(err)
	}
	return reqs
}

func TestMetaWipeCmds(t *testing.T) {
	metaImg := luks2test.NewImage(t, 1<<20)
	// a Talos user's own value in tag 12 stays as it is
	if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "12", "--value", "STATE\n", metaImg); err != nil {
		t.Fatal(err)
	}

	// a tag Talos would read as another (it reads one byte) is refused
	if _, err := cryptctl(t, "meta", "set", "--tag", "268", "--value", "x", metaImg); err == nil || !strings.Contains(err.Error(), "its tag 12") {
		t.Fatalf("tag 268: %v", err)
	}

	// the target is required; the old spelling on an image file says so
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "EPHEMERAL", metaImg); err == nil || !strings.Contains(err.Error(), "name the partition to wipe") {
		t.Fatalf("request without a target: %v", err)
	}
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "EPHEMERAL", "--partuuid", "not-a-guid", metaImg); err == nil || !strings.Contains(err.Error(), "is not a GUID") {
		t.Fatalf("bad --partuuid: %v", err)
	}
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "META", "--partuuid", ephPartUUID, metaImg); err == nil || !strings.Contains(err.Error(), "not a volume ID") {
		t.Fatalf("--volume META: %v", err)
	}
	if reqs := metaRequests(t, metaImg); len(reqs) != 0 {
		t.Fatalf("refused requests were written: %v", reqs)
	}

	// --disk: the PARTUUID of the partition labelled EPHEMERAL in the GPT
	out, err := cryptctl(t, "meta", "request-wipe", "--volume", "EPHEMERAL", "--disk", gptImage(t), metaImg)
	if err != nil || !strings.Contains(out, "PARTUUID="+ephPartUUID) {
		t.Fatalf("--disk: %v\n%s", err, out)
	}
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "u-data", "--disk", gptImage(t), metaImg); err == nil || !strings.Contains(err.Error(), "no partition labelled u-data") {
		t.Fatalf("--disk without that label: %v", err)
	}

	// --partition: the UUID of the LUKS header on it, which must be the one
	// on the disk's partition labelled --volume
	disk, img, luksUUID := wipeDisk(t)
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "u-data", "--partition", img, "--partuuid", strings.ToUpper(dataPartUUID), "--disk", disk, metaImg); err != nil {
		t.Fatal(err)
	}
	reqs := metaRequests(t, metaImg)
	if len(reqs) != 2 || reqs[0] != (meta.WipeRequest{Volume: "EPHEMERAL", PartUUID: ephPartUUID}) ||
		reqs[1] != (meta.WipeRequest{Volume: "u-data", PartUUID: dataPartUUID, LUKSUUID: luksUUID}) {
		t.Fatalf("requests %+v", reqs)
	}
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "u-data", "--partition", img, "--luks-uuid", ephPartUUID, "--disk", disk, metaImg); err == nil || !strings.Contains(err.Error(), "holds LUKS UUID") {
		t.Fatalf("--luks-uuid that --partition contradicts: %v", err)
	}
	if _, err := cryptctl(t, "meta", "request-wipe", "--volume", "EPHEMERAL", "--partition", img, "--disk", disk, metaImg); err == nil || !strings.Contains(err.Error(), "holds no LUKS header") {
		t.Fatalf("--partition of another volume: %v", err)
	}

	// list names the tags, shows the requests and reports tag 12
	out, err = cryptctl(t, "meta", "list", metaImg)
	for _, want := range []string{"193/0xc1", "cryptinit WipeRequest", "UserReserved1 (user's)",
		"wipe request: EPHEMERAL at PARTUUID=" + ephPartUUID, "wipe request: u-data at PARTUUID=" + dataPartUUID + ", LUKS UUID=" + luksUUID,
		"note: META tag 12 holds \"STATE\""} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("list lacks %q: %v\n%s", want, err, out)
		}
	}

	// cancel-wipe
	if out, err := cryptctl(t, "meta", "cancel-wipe", "--volume", "EPHEMERAL", metaImg); err != nil || !strings.Contains(out, "withdrawn") {
		t.Fatalf("cancel: %v %s", err, out)
	}
	if _, err := cryptctl(t, "meta", "cancel-wipe", "--volume", "EPHEMERAL", metaImg); exitCode(err) != exitFailure {
		t.Fatalf("second cancel: %v", err)
	}
	if reqs := metaRequests(t, metaImg); len(reqs) != 1 || reqs[0].Volume != "u-data" {
		t.Fatalf("left %+v", reqs)
	}
	if out, err := cryptctl(t, "meta", "get", "--tag", "12", metaImg); err != nil || out != "STATE\n" {
		t.Fatalf("tag 12 = %q, %v", out, err)
	}
}

// diskOfDev finds a partition's disk the way sysfs lays it out.
func TestDiskOfDev(t *testing.T) {
	sys := t.TempDir()
	part := filepath.Join(sys, "devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda4")
	if err := os.MkdirAll(part, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(part, "partition"), []byte("4\n"), 0o644)
	os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755)
	if err := os.Symlink("../../devices/pci0000:00/0000:00:04.0/virtio2/block/vda/vda4", filepath.Join(sys, "dev/block/253:4")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/pci0000:00/0000:00:04.0/virtio2/block/vda", filepath.Join(sys, "dev/block/253:0")); err != nil {
		t.Fatal(err)
	}
	if d, err := diskOfDev(sys, "/dev", 253, 4); err != nil || d != "/dev/vda" {
		t.Fatalf("partition: %q %v", d, err)
	}
	if d, err := diskOfDev(sys, "/dev", 253, 0); err == nil {
		t.Fatalf("a whole disk is no partition: %q", d)
	}
}
