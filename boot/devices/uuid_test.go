package devices

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// makeGPT writes a GPT disk image with go-diskfs (an independent writer)
// holding one 1 MiB partition per name, with the given GUIDs.
func makeGPT(t *testing.T, path string, sector diskfs.SectorSize, names, guids []string) {
	t.Helper()
	ss := uint64(512)
	if sector == diskfs.SectorSize4k {
		ss = 4096
	}
	d, err := diskfs.Create(path, int64(len(names)+2)<<20, sector)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: int(ss), PhysicalSectorSize: int(ss), ProtectiveMBR: true}
	start := uint64(1<<20) / ss
	for i, n := range names {
		sectors := uint64(1<<20) / ss
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: start + sectors - 1,
			Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: n, GUID: guids[i]})
		start += sectors
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
}

func TestReadGPT(t *testing.T) {
	names := []string{"META", "STATE", "u-Daten"}
	guids := []string{"0F1E2D3C-4B5A-4978-8796-A5B4C3D2E1F0", "11111111-2222-4333-8444-555555555555", "AABBCCDD-EEFF-4011-9233-445566778899"}
	for _, tc := range []struct {
		name   string
		sector diskfs.SectorSize
		first  uint64
	}{
		{"512-byte sectors", diskfs.SectorSize512, 2048},
		{"4096-byte sectors", diskfs.SectorSize4k, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			makeGPT(t, path, tc.sector, names, guids)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			entries, err := ReadGPT(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(names) {
				t.Fatalf("%d entries, want %d: %+v", len(entries), len(names), entries)
			}
			for i, e := range entries {
				if e.Index != i+1 || e.Name != names[i] || e.PartUUID != strings.ToLower(guids[i]) {
					t.Errorf("entry %d = %+v, want index %d name %s GUID %s", i, e, i+1, names[i], strings.ToLower(guids[i]))
				}
			}
			if entries[0].FirstLBA != tc.first {
				t.Errorf("first LBA %d, want %d", entries[0].FirstLBA, tc.first)
			}
		})
	}
}

func TestReadGPTRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	makeGPT(t, path, diskfs.SectorSize512, []string{"ROOT"}, []string{"11111111-2222-4333-8444-555555555555"})
	good, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name  string
		patch func(b []byte)
	}{
		{"zeroes", func(b []byte) { copy(b, make([]byte, 64<<10)) }},
		{"header CRC", func(b []byte) { b[512+56] ^= 1 }},   // disk GUID changed, CRC not
		{"entries CRC", func(b []byte) { b[1024+20] ^= 1 }}, // partition GUID changed, CRC not
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(good)
			tc.patch(b)
			if _, err := ReadGPT(bytes.NewReader(b)); !errors.Is(err, ErrNoGPT) {
				t.Errorf("ReadGPT = %v, want ErrNoGPT", err)
			}
		})
	}
}

// mkfsImage makes a filesystem image with the host's mkfs; it skips when
// the tool is missing (images/setup.sh installs them).
func mkfsImage(t *testing.T, size int64, tool string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		testenv.Missing(t, "%s not installed (images/setup.sh installs it)", tool)
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, append(args, img)...)
	cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1") // mkfs.xfs below 300 MB
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", tool, err, out)
	}
	return img
}

// blkidUUID is what util-linux says, when blkid is there.
func blkidUUID(t *testing.T, img string) (string, bool) {
	if !testenv.Have(t, "blkid") {
		return "", false
	}
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", img).Output()
	if err != nil {
		t.Errorf("blkid %s: %v", img, err)
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

func TestFSUUID(t *testing.T) {
	for _, tc := range []struct {
		name, tool string
		size       int64
		args       []string
		want       FSID
	}{
		{"ext4", "mkfs.ext4", 4 << 20, []string{"-q", "-F", "-U", "4D8F0C4E-3B1A-4C2D-9E5F-6A7B8C9D0E1F"}, FSID{"ext4", "4d8f0c4e-3b1a-4c2d-9e5f-6a7b8c9d0e1f"}},
		{"ext2", "mkfs.ext2", 4 << 20, []string{"-q", "-F", "-U", "01020304-0506-4708-890a-0b0c0d0e0f10"}, FSID{"ext2", "01020304-0506-4708-890a-0b0c0d0e0f10"}},
		{"xfs", "mkfs.xfs", 32 << 20, []string{"-q", "-f", "-m", "uuid=9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}, FSID{"xfs", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}},
		{"FAT32", "mkfs.vfat", 40 << 20, []string{"-F", "32", "-i", "1A2B3C4D"}, FSID{"vfat", "1a2b-3c4d"}},
		{"FAT16", "mkfs.vfat", 16 << 20, []string{"-F", "16", "-i", "DEADBEEF"}, FSID{"vfat", "dead-beef"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkfsImage(t, tc.size, tc.tool, tc.args...)
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, ok, err := FSUUID(f)
			if err != nil || !ok || got != tc.want {
				t.Fatalf("FSUUID = %+v %v %v, want %+v", got, ok, err, tc.want)
			}
			if b, ok := blkidUUID(t, img); ok && !strings.EqualFold(b, got.UUID) {
				t.Errorf("blkid says UUID=%s, FSUUID %s", b, got.UUID)
			}
		})
	}
}

func TestFSUUIDNothing(t *testing.T) {
	mbr := make([]byte, 4096) // boot signature but no BIOS parameter block
	mbr[510], mbr[511] = 0x55, 0xaa
	luks := append([]byte("LUKS\xba\xbe\x00\x02"), make([]byte, 4088)...)
	for name, b := range map[string][]byte{"zeroes": make([]byte, 8192), "short": []byte("XF"), "MBR only": mbr, "LUKS": luks} {
		if id, ok, err := FSUUID(bytes.NewReader(b)); ok || err != nil {
			t.Errorf("%s: FSUUID = %+v %v %v, want nothing", name, id, ok, err)
		}
	}
}

// TestResolveByID resolves PARTUUID= and UUID= on a fake sysfs whose /dev
// nodes are image files: vda a GPT disk, vda1/vda2 its partitions (an ext4
// and a blank one), vdb a bare xfs.
func TestResolveByID(t *testing.T) {
	f, _ := newFinder(t)
	os.MkdirAll(f.Dev, 0o755)
	guids := []string{"C0FFEE00-1111-4222-8333-444455556666", "DEC0DE00-1111-4222-8333-444455556666"}
	makeGPT(t, filepath.Join(f.Dev, "vda"), diskfs.SectorSize512, []string{"ROOT", "DATA"}, guids)
	ext4 := mkfsImage(t, 4<<20, "mkfs.ext4", "-q", "-F", "-U", "b34e8e0c-d322-4599-85ac-ade49bb21259")
	copyTestFile(t, ext4, filepath.Join(f.Dev, "vda1"))
	os.WriteFile(filepath.Join(f.Dev, "vda2"), make([]byte, 8192), 0o600)
	xfs := mkfsImage(t, 32<<20, "mkfs.xfs", "-q", "-f", "-m", "uuid=0badf00d-0000-4000-8000-000000000001")
	copyTestFile(t, xfs, filepath.Join(f.Dev, "vdb"))

	addBlock(t, f.Sys, "vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", 8192)
	addBlock(t, f.Sys, "vda1", "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=ROOT\n", 2048)
	addBlock(t, f.Sys, "vda2", "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=DATA\n", 2048)
	addBlock(t, f.Sys, "vdb", "MAJOR=254\nMINOR=16\nDEVNAME=vdb\nDEVTYPE=disk\n", 614400)
	addBlock(t, f.Sys, "loop0", "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n", 0)
	for _, p := range []string{"vda1", "vda2"} { // sysfs nests partitions in their disk
		os.MkdirAll(filepath.Join(f.Sys, "class", "block", "vda", p), 0o755)
	}
	found, err := f.Wait(t.Context(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(n string) string { return filepath.Join(f.Dev, n) }
	for _, tc := range []struct {
		spec, want string
		errHas     []string
	}{
		{spec: "PARTUUID=" + guids[0], want: dev("vda1")},
		{spec: "PARTUUID=" + strings.ToLower(guids[1]), want: dev("vda2")},
		{spec: "UUID=B34E8E0C-D322-4599-85AC-ADE49BB21259", want: dev("vda1")},
		{spec: "UUID=0badf00d-0000-4000-8000-000000000001", want: dev("vdb")},
		{spec: `UUID="0badf00d-0000-4000-8000-000000000001"`, want: dev("vdb")},
		{spec: "PARTUUID=00000000-1111-4222-8333-444455556666", errHas: []string{"no device has that partition GUID", "vda1 PARTUUID=c0ffee00-", "vda2 PARTUUID=dec0de00-"}},
		{spec: "UUID=12345678-0000-4000-8000-000000000000", errHas: []string{"no device has that filesystem UUID", "vda1 ext4 UUID=b34e8e0c-d322-4599-85ac-ade49bb21259", "vdb xfs UUID=0badf00d-"}},
		{spec: "UUID=", errHas: []string{"empty filesystem UUID"}},
	} {
		got, err := Resolve(tc.spec, found)
		if tc.errHas == nil {
			if err != nil || got != tc.want {
				t.Errorf("Resolve(%s) = %q, %v; want %s", tc.spec, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Resolve(%s) = %q, want an error", tc.spec, got)
			continue
		}
		for _, s := range tc.errHas {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("Resolve(%s) error lacks %q: %v", tc.spec, s, err)
			}
		}
	}

	// A disk that appears after Wait is found: Resolve scans again.
	copyTestFile(t, ext4, filepath.Join(f.Dev, "vdc"))
	addBlock(t, f.Sys, "vdc", "MAJOR=254\nMINOR=32\nDEVNAME=vdc\nDEVTYPE=disk\n", 8192)
	if _, err := Resolve("UUID=b34e8e0c-d322-4599-85ac-ade49bb21259", found); err == nil || !strings.Contains(err.Error(), "found on 2 devices (vda1, vdc)") {
		t.Errorf("a UUID on two devices: %v, want an error naming both", err)
	}
}

// TestResolvePartitionUnknownToKernel: a GPT entry the kernel has no
// partition for is reported, never resolved to a wrong device.
func TestResolvePartitionUnknownToKernel(t *testing.T) {
	f, _ := newFinder(t)
	os.MkdirAll(f.Dev, 0o755)
	guid := "C0FFEE00-1111-4222-8333-444455556666"
	makeGPT(t, filepath.Join(f.Dev, "vda"), diskfs.SectorSize512, []string{"ROOT"}, []string{guid})
	addBlock(t, f.Sys, "vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", 6144)
	found, err := f.Wait(t.Context(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve("PARTUUID="+guid, found)
	if err == nil || !strings.Contains(err.Error(), "vda partition 1 PARTUUID=c0ffee00-1111-4222-8333-444455556666 (not known to the kernel)") {
		t.Errorf("Resolve = %v", err)
	}
}

// copyTestFile puts src at dst by a hard link: the images are sparse and
// some large, and both sit in the test's temporary directories.
func copyTestFile(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.Link(src, dst); err != nil {
		t.Fatal(err)
	}
}

// ResolveWait looks again for an id no device has until its timeout, then
// says it waited; an error that waiting cannot mend returns at once.
func TestResolveWait(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		minWait time.Duration
		errHas  string
	}{
		{"UUID=12345678-0000-4000-8000-000000000000", 200 * time.Millisecond, "(waited 200ms, cryptinit.wait=)"},
		{"UUID=", 0, "empty filesystem UUID"},
		{"LABEL=x", 0, "unsupported device spec"},
	} {
		start := time.Now()
		_, err := ResolveWait(context.Background(), tc.spec, &Found{ByLabel: map[string]Block{}}, 200*time.Millisecond)
		if took := time.Since(start); err == nil || !strings.Contains(err.Error(), tc.errHas) || took < tc.minWait {
			t.Errorf("%s: error %v after %s, want %q after at least %s", tc.spec, err, took, tc.errHas, tc.minWait)
		}
		if tc.minWait > 0 && !errors.Is(err, ErrNoMatch) {
			t.Errorf("%s: %v is not ErrNoMatch", tc.spec, err)
		}
	}
}
