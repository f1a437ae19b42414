package devices

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	diskfs "github.com/diskfs/go-diskfs"
)

// fakeDisk is one disk of a fake machine: its kernel name and the GPT
// names of its partitions, in order (1-based partition numbers).
type fakeDisk struct {
	name   string
	labels []string
}

// guidOf is the partition GUID fakeMachine gives partition n of disk d.
func guidOf(d, n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", d+1, n)
}

// fakeMachine writes a sysfs tree and /dev files for disks, in the order
// given: each disk a real GPT image (go-diskfs) at /dev/<disk>, each
// partition an empty /dev/<disk><n>, and its directory inside the disk's
// in sysfs, as the kernel nests them. It returns the Finder and a scan.
func fakeMachine(t *testing.T, disks ...fakeDisk) (*Finder, *Found) {
	t.Helper()
	f, _ := newFinder(t)
	if err := os.MkdirAll(f.Dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for di, d := range disks {
		var guids []string
		for n := range d.labels {
			guids = append(guids, guidOf(di, n+1))
		}
		img := filepath.Join(f.Dev, d.name)
		makeGPT(t, img, diskfs.SectorSize512, d.labels, guids)
		st, err := os.Stat(img)
		if err != nil {
			t.Fatal(err)
		}
		addBlock(t, f.Sys, d.name, fmt.Sprintf("MAJOR=254\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=disk\n", di*16, d.name), int(st.Size()/512))
		for n, l := range d.labels {
			part := fmt.Sprintf("%s%d", d.name, n+1)
			addBlock(t, f.Sys, part, fmt.Sprintf("MAJOR=254\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=partition\nPARTN=%d\nPARTNAME=%s\n", di*16+n+1, part, n+1, l), 2048)
			if err := os.MkdirAll(filepath.Join(f.Sys, "class", "block", d.name, part), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(f.Dev, part), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	found, err := f.Wait(context.Background(), nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return f, found
}

var nodeLayout = []string{"META", "STATE", "EPHEMERAL"}

// TestSelectNode covers the node-disk rule: which disk is the node's, which
// partition each volume label maps to, what is ignored and what refuses.
func TestSelectNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disks   []fakeDisk
		loader  string          // LoaderDevicePartUUID
		anyDisk map[string]bool // user volumes whose config names a disk
		node    string          // want: the node's disk
		want    map[string]string
		ignored []string
		errHas  []string // want an *AmbiguousError saying these
	}{
		{
			// The regression of issue 10 defect 12: an empty EPHEMERAL on
			// a stick enumerated first (vda) was formatted as /var.
			name:    "planted EPHEMERAL on a disk enumerated first",
			disks:   []fakeDisk{{"vda", []string{"EPHEMERAL"}}, {"vdb", nodeLayout}},
			node:    "vdb",
			want:    map[string]string{"META": "vdb1", "STATE": "vdb2", "EPHEMERAL": "vdb3"},
			ignored: []string{"vda1"},
		},
		{
			name:    "planted STATE and EPHEMERAL, no META on the stick",
			disks:   []fakeDisk{{"sda", []string{"STATE", "EPHEMERAL"}}, {"vda", nodeLayout}},
			node:    "vda",
			want:    map[string]string{"META": "vda1", "STATE": "vda2", "EPHEMERAL": "vda3"},
			ignored: []string{"sda1", "sda2"},
		},
		{
			name:   "a full planted set: META on two disks, no loader variable",
			disks:  []fakeDisk{{"vda", nodeLayout}, {"vdb", append([]string{"EFI"}, nodeLayout...)}},
			errHas: []string{"2 disks hold a partition labelled META", "/vda1 (disk vda, partition GUID " + guidOf(0, 1) + ")", "/vdb2 (disk vdb, partition GUID " + guidOf(1, 2) + ")"},
		},
		{
			name:    "a full planted set, the ESP the UKI booted from names the node's disk",
			disks:   []fakeDisk{{"vda", nodeLayout}, {"vdb", append([]string{"EFI"}, nodeLayout...)}},
			loader:  strings.ToUpper(guidOf(1, 1)),
			node:    "vdb",
			want:    map[string]string{"META": "vdb2", "STATE": "vdb3", "EPHEMERAL": "vdb4"},
			ignored: []string{"vda1", "vda2", "vda3"},
		},
		{
			name:   "the ESP's disk has STATE but META is on another disk",
			disks:  []fakeDisk{{"vda", []string{"META"}}, {"vdb", []string{"EFI", "STATE", "EPHEMERAL"}}},
			loader: guidOf(1, 1),
			errHas: []string{"the ESP the UKI booted from is on disk vdb (vdb1), but META is on another disk", "/vda1 (disk vda, partition GUID " + guidOf(0, 1) + ")"},
		},
		{
			name:    "the ESP is on a boot-only disk: META's disk is the node's",
			disks:   []fakeDisk{{"vda", []string{"EFI"}}, {"vdb", []string{"EPHEMERAL"}}, {"vdc", nodeLayout}},
			loader:  guidOf(0, 1),
			node:    "vdc",
			want:    map[string]string{"META": "vdc1", "STATE": "vdc2", "EPHEMERAL": "vdc3"},
			ignored: []string{"vdb1"},
		},
		{
			name:  "no META, no loader: the only disk with system labels",
			disks: []fakeDisk{{"vda", []string{"ROOT"}}, {"vdb", []string{"STATE", "EPHEMERAL"}}},
			node:  "vdb",
			want:  map[string]string{"STATE": "vdb1", "EPHEMERAL": "vdb2"},
		},
		{
			name:   "no META, no loader, two disks with system labels",
			disks:  []fakeDisk{{"vda", []string{"EPHEMERAL"}}, {"vdb", []string{"STATE", "EPHEMERAL"}}},
			errHas: []string{"no META, and 2 disks carry STATE or EPHEMERAL labels", "/vda1 (disk vda", "/vdb1 (disk vdb", "/vdb2 (disk vdb"},
		},
		{
			name:   "two STATE partitions on the node's disk",
			disks:  []fakeDisk{{"vda", []string{"META", "STATE", "STATE", "EPHEMERAL"}}},
			errHas: []string{"2 partitions on the node's disk vda are labelled STATE", "/vda2 (disk vda, partition GUID " + guidOf(0, 2) + ")", "/vda3 (disk vda, partition GUID " + guidOf(0, 3) + ")"},
		},
		{
			name:    "a user volume on another disk, its config names no disk",
			disks:   []fakeDisk{{"vda", nodeLayout}, {"vdb", []string{"u-data"}}},
			node:    "vda",
			want:    map[string]string{"META": "vda1", "STATE": "vda2", "EPHEMERAL": "vda3"},
			ignored: []string{"vdb1"},
		},
		{
			name:    "a user volume on another disk, its config names a disk",
			disks:   []fakeDisk{{"vda", nodeLayout}, {"vdb", []string{"u-data"}}},
			anyDisk: map[string]bool{"u-data": true},
			node:    "vda",
			want:    map[string]string{"META": "vda1", "STATE": "vda2", "EPHEMERAL": "vda3", "u-data": "vdb1"},
		},
		{
			name:    "a user volume whose config names a disk, on two disks",
			disks:   []fakeDisk{{"vda", append(nodeLayout, "u-data")}, {"vdb", []string{"u-data"}}},
			anyDisk: map[string]bool{"u-data": true},
			errHas:  []string{"2 partitions are labelled u-data", "/vda4 (disk vda", "/vdb1 (disk vdb"},
		},
		{
			name:    "a system label never moves off the node's disk, whatever anyDisk says",
			disks:   []fakeDisk{{"vda", []string{"EPHEMERAL"}}, {"vdb", nodeLayout}},
			anyDisk: map[string]bool{"EPHEMERAL": true},
			node:    "vdb",
			want:    map[string]string{"META": "vdb1", "STATE": "vdb2", "EPHEMERAL": "vdb3"},
			ignored: []string{"vda1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, found := fakeMachine(t, tc.disks...)
			sel, err := SelectNode(found, tc.loader, tc.anyDisk)
			if tc.errHas != nil {
				var amb *AmbiguousError
				if !errors.As(err, &amb) {
					t.Fatalf("SelectNode = %+v, %v; want an *AmbiguousError", sel, err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error does not say %q: %v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sel.Node.Known || sel.Node.Disk != tc.node {
				t.Errorf("node disk %+v, want %s", sel.Node, tc.node)
			}
			got := map[string]string{}
			for l, b := range sel.ByLabel {
				got[l] = b.Name
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("ByLabel %v, want %v", got, tc.want)
			}
			var ign []string
			for _, b := range sel.Ignored {
				ign = append(ign, b.Name)
			}
			if fmt.Sprint(ign) != fmt.Sprint(tc.ignored) && !(len(ign) == 0 && len(tc.ignored) == 0) {
				t.Errorf("ignored %v, want %v", ign, tc.ignored)
			}
			// Apply leaves only the selected partitions under volume labels.
			found.Apply(sel)
			for l, b := range found.ByLabel {
				if IsVolumeLabel(l) && tc.want[l] != b.Name {
					t.Errorf("after Apply, %s = %s, want %q", l, b.Name, tc.want[l])
				}
			}
			for _, d := range found.Dups {
				if IsVolumeLabel(d) {
					t.Errorf("after Apply, volume label %s still listed as a duplicate", d)
				}
			}
		})
	}
}

// TestScanTakesTheFirstLabel pins what SelectNode corrects: a scan alone
// maps a label to the first partition by kernel name, the planted one.
func TestScanTakesTheFirstLabel(t *testing.T) {
	_, found := fakeMachine(t, fakeDisk{"vda", []string{"EPHEMERAL"}}, fakeDisk{"vdb", nodeLayout})
	if found.ByLabel["EPHEMERAL"].Name != "vda1" {
		t.Fatalf("scan maps EPHEMERAL to %s; this test assumes the first by name", found.ByLabel["EPHEMERAL"].Name)
	}
	sel, err := SelectNode(found, "", nil)
	if err != nil || sel.ByLabel["EPHEMERAL"].Name != "vdb3" {
		t.Fatalf("SelectNode: %+v, %v", sel, err)
	}
}

// TestSelectNodeESPNotSeen: LoaderDevicePartUUID names a partition no
// disk seen has (the node's disk is slower than a stick carrying a full
// planted set). No disk is taken for the node's, not even the one holding
// META: the error names the GUID and the disks seen.
func TestSelectNodeESPNotSeen(t *testing.T) {
	for _, disks := range [][]fakeDisk{
		{{"vda", []string{"EPHEMERAL"}}, {"vdb", nodeLayout}},
		{{"sda", nodeLayout}},
	} {
		_, found := fakeMachine(t, disks...)
		const loader = "00000000-0000-4000-8000-0000000000ff"
		sel, err := SelectNode(found, strings.ToUpper(loader), nil)
		var ns *ESPNotSeenError
		if !errors.As(err, &ns) {
			t.Fatalf("%v: SelectNode = %+v, %v; want an *ESPNotSeenError", disks, sel, err)
		}
		want := "the ESP the UKI booted from (LoaderDevicePartUUID " + loader + ") is on no disk seen; seen: disks " + disks[0].name
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
		if _, err := ConfigSourceByLabel(found, "META", loader); !errors.As(err, &ns) {
			t.Errorf("ConfigSourceByLabel: %v; want an *ESPNotSeenError", err)
		}
	}
}

func TestConfigSourceByLabel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		disks  []fakeDisk
		loader string
		want   string // partition name, or "" for an error
		errHas string
	}{
		{"ESP on the node's disk, another on a stick first",
			[]fakeDisk{{"vda", []string{"ESP"}}, {"vdb", append(nodeLayout, "ESP")}}, "", "vdb4", ""},
		{"ESP only on a stick",
			[]fakeDisk{{"vda", []string{"ESP"}}, {"vdb", nodeLayout}}, "", "", "vda1 on disk vda) are not on the node's disk vdb (it holds META)"},
		{"ESP on a boot-only disk the UKI booted from",
			[]fakeDisk{{"vda", []string{"ESP"}}, {"vdb", nodeLayout}}, guidOf(0, 1), "vda1", ""},
		{"two ESPs on the node's disk",
			[]fakeDisk{{"vda", append(nodeLayout, "ESP", "ESP")}}, "", "", "2 partitions are labelled ESP"},
		{"no node disk known: the only ESP",
			[]fakeDisk{{"vda", []string{"ESP"}}}, "", "vda1", ""},
		{"no partition so labelled",
			[]fakeDisk{{"vda", nodeLayout}}, "", "", "no partition with that label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, found := fakeMachine(t, tc.disks...)
			b, err := ConfigSourceByLabel(found, "ESP", tc.loader)
			if tc.want != "" {
				if err != nil || b.Name != tc.want {
					t.Errorf("got %s, %v; want %s", b.Name, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("got %s, %v; want an error saying %q", b.Name, err, tc.errHas)
			}
		})
	}
}

func TestResolveRefusesALabelOnTwoPartitions(t *testing.T) {
	_, found := fakeMachine(t, fakeDisk{"vda", []string{"ROOT"}}, fakeDisk{"vdb", []string{"META", "STATE", "ROOT"}})
	if _, err := Resolve("PARTLABEL=ROOT", found); err == nil || !strings.Contains(err.Error(), "2 partitions are labelled ROOT (vda1, vdb3)") {
		t.Errorf("Resolve(PARTLABEL=ROOT) = %v, want a refusal naming both", err)
	}
	if dev, err := Resolve("PARTLABEL=META", found); err != nil || filepath.Base(dev) != "vdb1" {
		t.Errorf("Resolve(PARTLABEL=META) = %s, %v", dev, err)
	}
}

func TestReadLoaderDevicePartUUID(t *testing.T) {
	dir := t.TempDir()
	if id, err := ReadLoaderDevicePartUUID(dir); id != "" || err != nil {
		t.Errorf("no variable: %q, %v", id, err)
	}
	write := func(s string) {
		b := []byte{6, 0, 0, 0} // attributes: boot service + runtime access
		for _, c := range utf16.Encode([]rune(s)) {
			b = append(b, byte(c), byte(c>>8))
		}
		if err := os.WriteFile(filepath.Join(dir, LoaderDevicePartUUIDVar), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("6A1A2E4C-0B9D-4F2E-9A61-1C2D3E4F5A6B\x00") // systemd-stub writes upper case, NUL-terminated
	if id, err := ReadLoaderDevicePartUUID(dir); id != "6a1a2e4c-0b9d-4f2e-9a61-1c2d3e4f5a6b" || err != nil {
		t.Errorf("got %q, %v", id, err)
	}
	write("not a guid")
	if id, err := ReadLoaderDevicePartUUID(dir); err == nil {
		t.Errorf("garbage read as %q", id)
	}
}
