package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// fakeHost is a machine with disk vda (partitions META, STATE, EPHEMERAL,
// u-data as wipeDisk lays them out) and disk vdb, as sysfs and /dev show
// them; its partitions are image files that stat as block devices.
type fakeHost struct {
	v              devView
	metaPart, eph  string // zeroed images standing for /dev/vda1 and /dev/vda3
	noname         string // a zeroed image standing for /dev/vda6, a partition without a GPT name
	vda, vdb, disk string // vda, vdb under the fake /dev; disk: the image vda copies
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	root := t.TempDir()
	h := &fakeHost{}
	h.v.sys, h.v.dev = filepath.Join(root, "sys"), filepath.Join(root, "dev")
	devs := map[string][2]uint32{}
	block := func(disk, part string, major, minor uint32, partname string) {
		rel := "devices/pci0000:00/virtio2/block/" + disk
		if part != "" {
			rel += "/" + part
		}
		dir := filepath.Join(h.v.sys, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		uevent := "DEVTYPE=disk\n"
		if part != "" {
			os.WriteFile(filepath.Join(dir, "partition"), []byte("1\n"), 0o644)
			uevent = "DEVTYPE=partition\nPARTN=1\n"
			if partname != "" {
				uevent += "PARTNAME=" + partname + "\n"
			}
		}
		os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644)
		os.MkdirAll(filepath.Join(h.v.sys, "dev/block"), 0o755)
		if err := os.Symlink("../../"+rel, filepath.Join(h.v.sys, "dev/block", fmt.Sprintf("%d:%d", major, minor))); err != nil {
			t.Fatal(err)
		}
	}
	block("vda", "", 253, 0, "")
	block("vda", "vda1", 253, 1, "META")
	block("vda", "vda3", 253, 3, "EPHEMERAL")
	block("vda", "vda6", 253, 6, "") // a partition without a GPT name
	block("vdb", "", 253, 16, "")
	os.MkdirAll(h.v.dev, 0o755)
	h.disk, _, _ = wipeDisk(t)
	b, err := os.ReadFile(h.disk)
	if err != nil {
		t.Fatal(err)
	}
	h.vda, h.vdb = filepath.Join(h.v.dev, "vda"), filepath.Join(h.v.dev, "vdb")
	os.WriteFile(h.vda, b, 0o644)
	if b, err = os.ReadFile(gptImage(t)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(h.vdb, b, 0o644)
	h.metaPart, h.eph = luks2test.NewImage(t, 1<<20), luks2test.NewImage(t, 2<<20)
	h.noname = luks2test.NewImage(t, 1<<20)
	devs[h.metaPart], devs[h.eph], devs[h.noname], devs[h.vda] = [2]uint32{253, 1}, [2]uint32{253, 3}, [2]uint32{253, 6}, [2]uint32{253, 0}
	h.v.stat = func(path string) (uint32, uint32, bool, error) {
		if _, err := os.Stat(path); err != nil {
			return 0, 0, false, err
		}
		d, ok := devs[path]
		return d[0], d[1], ok, nil
	}
	return h
}

// runSub runs one meta subcommand built on a fake host.
func runSub(c *cobra.Command, args ...string) (string, error) {
	var out bytes.Buffer
	c.SilenceUsage, c.SilenceErrors = true, true
	c.SetIn(bytes.NewReader(nil))
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.Execute()
	return out.String(), err
}

// meta set, delete and request-wipe write META only to the partition
// labelled META: a zeroed EPHEMERAL (a mistyped /dev/sda4) keeps every byte,
// with or without --init, and so does a whole disk or a partition without a
// GPT name; a zeroed partition labelled META is written.
func TestMetaWritesOnlyThePartitionLabelledMETA(t *testing.T) {
	h := newFakeHost(t)
	for _, c := range []struct {
		name    string
		cmd     *cobra.Command
		args    []string
		wantErr string
	}{
		{"set on EPHEMERAL", newMetaSetCmd(h.v), []string{"--tag", "15", "--value", "x", h.eph}, "labelled EPHEMERAL, not META"},
		{"set --init on EPHEMERAL", newMetaSetCmd(h.v), []string{"--init", "--tag", "15", "--value", "x", h.eph}, "labelled EPHEMERAL, not META"},
		{"request-wipe on EPHEMERAL", newMetaWipeCmd(h.v), []string{"--volume", "EPHEMERAL", h.eph}, "labelled EPHEMERAL, not META"},
		{"set on the whole disk", newMetaSetCmd(h.v), []string{"--tag", "15", "--value", "x", h.vda}, "cannot read its GPT partition name"},
		{"set on a partition without a name", newMetaSetCmd(h.v), []string{"--tag", "15", "--value", "x", h.noname}, "no PARTNAME"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.args[len(c.args)-1]
			before, _ := os.ReadFile(path)
			_, err := runSub(c.cmd, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "nothing was written") {
				t.Errorf("%v; want an error with %q that says nothing was written", err, c.wantErr)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Errorf("%s changed", path)
			}
		})
	}
	if out, err := runSub(newMetaSetCmd(h.v), "--tag", "15", "--value", "x", h.metaPart); err != nil {
		t.Fatalf("set on the zeroed partition labelled META: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, "meta", "get", "--tag", "15", h.metaPart); err != nil || out != "x" {
		t.Fatalf("tag 15 = %q, %v", out, err)
	}
}

// A blank image file (all zeros or empty) becomes a META only with --init;
// without it nothing is written.
func TestMetaBlankImageNeedsInit(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.img")
	os.WriteFile(empty, nil, 0o644)
	for name, img := range map[string]string{"zeroed": luks2test.NewImage(t, 1<<20), "empty": empty} {
		t.Run(name, func(t *testing.T) {
			before, _ := os.ReadFile(img)
			for _, args := range [][]string{
				{"set", "--tag", "15", "--value", "x"},
				{"request-wipe", "--volume", "EPHEMERAL", "--disk", gptImage(t)},
			} {
				_, err := cryptctl(t, append(append([]string{"meta"}, args...), img)...)
				if err == nil || !strings.Contains(err.Error(), "--init") || !strings.Contains(err.Error(), "nothing was written") {
					t.Errorf("meta %s on a blank image without --init: %v", args[0], err)
				}
				if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
					t.Errorf("meta %s without --init changed the blank image", args[0])
				}
			}
			if _, err := cryptctl(t, "meta", "set", "--init", "--tag", "15", "--value", "x", img); err != nil {
				t.Fatalf("set --init: %v", err)
			}
			if out, err := cryptctl(t, "meta", "get", "--tag", "15", img); err != nil || out != "x" {
				t.Fatalf("tag 15 = %q, %v", out, err)
			}
		})
	}
}

// When META is a partition, request-wipe checks the disk holding it: --disk
// may name only that disk, else nothing is written.
func TestRequestWipeDiskMustHoldMETA(t *testing.T) {
	h := newFakeHost(t)
	before, _ := os.ReadFile(h.metaPart)
	_, err := runSub(newMetaWipeCmd(h.v), "--volume", "EPHEMERAL", "--disk", h.vdb, h.metaPart)
	if err == nil || !strings.Contains(err.Error(), "the disk holding META") || !strings.Contains(err.Error(), h.vda) {
		t.Errorf("--disk of another disk: %v", err)
	}
	if after, _ := os.ReadFile(h.metaPart); !bytes.Equal(before, after) {
		t.Error("a refused request-wipe changed META")
	}
	for _, args := range [][]string{{"--disk", h.vda}, nil} {
		out, err := runSub(newMetaWipeCmd(h.v), append(append([]string{"--volume", "EPHEMERAL"}, args...), h.metaPart)...)
		if err != nil || !strings.Contains(out, "PARTUUID="+ephPartUUID) || !strings.Contains(out, "of "+h.vda) {
			t.Fatalf("request-wipe %v: %v\n%s", args, err, out)
		}
	}
}

// volume format/sync/unlock write META (tag 9, the format journal) only
// when --meta is the partition labelled META: a zeroed EPHEMERAL given as
// --meta is refused before anything is written, to it or to the volume.
func TestVolumeMetaOnlyThePartitionLabelledMETA(t *testing.T) {
	h := newFakeHost(t)
	cfg := tpmEphConfig(t, "")
	img := luks2test.NewImage(t, 20<<20)
	metaBefore, _ := os.ReadFile(h.eph)
	_, err := runSub(newVolumeSubCmd(h.v, "format", ""), "--config", cfg, "--volume", "EPHEMERAL", img, "--meta", h.eph)
	if err == nil || !strings.Contains(err.Error(), "--meta: ") || !strings.Contains(err.Error(), "labelled EPHEMERAL, not META") {
		t.Fatalf("format --meta EPHEMERAL: %v", err)
	}
	if after, _ := os.ReadFile(h.eph); !bytes.Equal(metaBefore, after) {
		t.Error("--meta EPHEMERAL was written")
	}
	if b, _ := os.ReadFile(img); bytes.Count(b, []byte{0}) != len(b) {
		t.Error("the volume was formatted although --meta was refused")
	}
	if out, err := runSub(newVolumeSubCmd(h.v, "format", ""), "--config", cfg, "--volume", "EPHEMERAL", img, "--meta", h.metaPart); err != nil {
		t.Fatalf("format --meta on the partition labelled META: %v\n%s", err, out)
	}
}
