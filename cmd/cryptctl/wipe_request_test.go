package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

const (
	statePartUUID = "5ae2c8b4-3f0e-4d43-9a1b-2f7c0f4d8e61"
	dataPartUUID  = "c3d4e5f6-0718-4a9b-8c0d-1e2f3a4b5c6d"
)

// wipeDisk writes a whole-disk image (GPT by go-diskfs) with META, STATE,
// EPHEMERAL (no header) and u-data (a LUKS2 volume, made by cryptctl luks
// format); it returns its path, an image of u-data and u-data's LUKS UUID.
func wipeDisk(t *testing.T) (disk, dataImg, dataLUKS string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	d, err := diskfs.Create(path, 64<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	const mib = 2048 // sectors
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 1 * mib, End: 2*mib - 1, Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: "META", GUID: "0fc63daf-8483-4772-8e79-3d69d8477de4"},
		{Index: 2, Start: 2 * mib, End: 12*mib - 1, Size: 10 << 20, Type: gpt.LinuxFilesystem, Name: "STATE", GUID: statePartUUID},
		{Index: 3, Start: 12 * mib, End: 14*mib - 1, Size: 2 << 20, Type: gpt.LinuxFilesystem, Name: "EPHEMERAL", GUID: ephPartUUID},
		{Index: 4, Start: 14 * mib, End: 34*mib - 1, Size: 20 << 20, Type: gpt.LinuxFilesystem, Name: "u-data", GUID: dataPartUUID},
		{Index: 5, Start: 34 * mib, End: 35*mib - 1, Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: "u-broken", GUID: "d4e5f607-1829-4a3b-9c4d-5e6f708192a3"},
	}}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	d.Close()
	vol := luks2test.NewImage(t, 20<<20)
	if out, code := cryptctlIn(nil, append([]string{"luks", "format", vol, "--key-file", luks2test.KeyFile(t, []byte("k"))}, cheapKDF...)...); code != 0 {
		t.Fatalf("luks format: %s", out)
	}
	uuid, err := readLUKSUUID(vol)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 14*mib*512); err != nil {
		t.Fatal(err)
	}
	// u-broken: a LUKS2 magic and nothing valid after it
	if _, err := f.WriteAt([]byte("LUKS\xba\xbe\x00\x02"), 34*mib*512); err != nil {
		t.Fatal(err)
	}
	return path, vol, uuid
}

// request-wipe accepts only a volume that exists on the disk (label and,
// when given, partition GUID and LUKS UUID), says what the wipe destroys
// and how to cancel, and asks for --yes before STATE; anything refused
// leaves META as it was.
func TestRequestWipeChecksTheDisk(t *testing.T) {
	disk, _, dataLUKS := wipeDisk(t)
	for _, c := range []struct {
		name    string
		args    []string
		wantErr string
		want    []string // in the output when accepted
	}{
		{name: "bogus", args: []string{"--volume", "bogus"}, wantErr: `"bogus" is not a volume ID`},
		{name: "ephemeral in lower case", args: []string{"--volume", "ephemeral"}, wantErr: "did you mean EPHEMERAL?"},
		{name: "state in lower case", args: []string{"--volume", "state"}, wantErr: "did you mean STATE?"},
		{name: "user volume not on the disk", args: []string{"--volume", "u-bogus"}, wantErr: "has no partition labelled u-bogus (its partitions: META, STATE, EPHEMERAL, u-data, u-broken)"},
		{name: "user volume without its prefix case", args: []string{"--volume", "U-data"}, wantErr: "did you mean u-data?"},
		{name: "user volume without its prefix", args: []string{"--volume", "data"}, wantErr: "did you mean u-data?"},
		{name: "GUID of another partition", args: []string{"--volume", "EPHEMERAL", "--partuuid", dataPartUUID}, wantErr: "labelled u-data, not EPHEMERAL"},
		{name: "GUID not on the disk", args: []string{"--volume", "EPHEMERAL", "--partuuid", "11111111-2222-3333-4444-555555555555"}, wantErr: "no partition on"},
		{name: "LUKS UUID on a partition without LUKS", args: []string{"--volume", "EPHEMERAL", "--luks-uuid", dataLUKS}, wantErr: "holds no LUKS header"},
		{name: "wrong LUKS UUID", args: []string{"--volume", "u-data", "--luks-uuid", "11111111-2222-3333-4444-555555555555"}, wantErr: "holds LUKS UUID " + dataLUKS},
		{name: "STATE without --yes", args: []string{"--volume", "STATE"}, wantErr: "add --yes"},
		{name: "EPHEMERAL", args: []string{"--volume", "EPHEMERAL"}, want: []string{
			"PARTUUID=" + ephPartUUID, "partition 3 of " + disk + ", labelled EPHEMERAL", "2.0 MiB (2097152 bytes)",
			"no LUKS header", "cryptctl meta cancel-wipe --volume EPHEMERAL"}},
		{name: "u-data by LUKS UUID", args: []string{"--volume", "u-data", "--luks-uuid", strings.ToUpper(dataLUKS)}, want: []string{
			"PARTUUID=" + dataPartUUID + ", LUKS UUID=" + dataLUKS, "20.0 MiB (20971520 bytes)", "LUKS2 UUID " + dataLUKS}},
		{name: "damaged LUKS header", args: []string{"--volume", "u-broken"}, want: []string{
			"partition 5 of", "a LUKS header that cannot be read"}},
		{name: "damaged LUKS header by LUKS UUID", args: []string{"--volume", "u-broken", "--luks-uuid", dataLUKS}, wantErr: "no readable LUKS header"},
		{name: "STATE with --yes", args: []string{"--volume", "STATE", "--yes"}, want: []string{
			"salt (encryption-salt.yaml)", "EPHEMERAL, u-data, u-broken on this disk", "partition 2 of", "10.0 MiB",
			"cryptctl meta cancel-wipe --volume STATE"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			metaImg := luks2test.NewImage(t, 1<<20)
			before, _ := os.ReadFile(metaImg)
			out, err := cryptctl(t, append(append([]string{"meta", "request-wipe", "--init"}, c.args...), "--disk", disk, metaImg)...)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("err %v, want one with %q", err, c.wantErr)
				}
				if after, _ := os.ReadFile(metaImg); !bytes.Equal(before, after) {
					t.Error("a refused request changed META")
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if reqs := metaRequests(t, metaImg); len(reqs) != 1 || reqs[0].Volume != c.args[1] {
				t.Errorf("requests %+v", reqs)
			}
		})
	}
}

// Without --disk, a META that is an image file names no disk to check the
// volume against: refused.
func TestRequestWipeNeedsADisk(t *testing.T) {
	metaImg := luks2test.NewImage(t, 1<<20)
	_, err := cryptctl(t, "meta", "request-wipe", "--volume", "EPHEMERAL", "--partuuid", ephPartUUID, metaImg)
	if err == nil || !strings.Contains(err.Error(), "give --disk DISK") {
		t.Fatalf("request on an image META without --disk: %v", err)
	}
	if reqs := metaRequests(t, metaImg); len(reqs) != 0 {
		t.Fatalf("written: %+v", reqs)
	}
}
