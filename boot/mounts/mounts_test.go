package mounts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type call struct {
	source, target, fstype string
	flags                  uintptr
}

type fakeMounter struct {
	calls []call
	fail  map[string]error // by target base name
}

func (f *fakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.calls = append(f.calls, call{source, target, fstype, flags})
	return f.fail[filepath.Base(target)]
}

func (f *fakeMounter) Unmount(string) error { return nil }

func TestEarly(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/kernel/security"), 0o755) // securityfs present, no EFI
	m := &fakeMounter{fail: map[string]error{"dev": unix.EBUSY}}   // kernel mounted devtmpfs already
	res, err := MountAll(m, root, Early())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range m.calls {
		got = append(got, c.fstype+" "+strings.TrimPrefix(c.target, root))
	}
	want := "proc /proc,sysfs /sys,devtmpfs /dev,tmpfs /run,securityfs /sys/kernel/security"
	if strings.Join(got, ",") != want {
		t.Errorf("mounts %q\nwant %q", strings.Join(got, ","), want)
	}
	if !res[4].Skipped || res[4].Point.FSType != "efivarfs" {
		t.Errorf("efivarfs should be skipped without EFI: %+v", res[4])
	}
}

func TestEarlyStopsOnRequiredFailure(t *testing.T) {
	m := &fakeMounter{fail: map[string]error{"sys": unix.ENODEV}}
	res, err := MountAll(m, t.TempDir(), Early())
	if err == nil || !strings.Contains(err.Error(), "sysfs on /sys") || len(res) != 2 {
		t.Fatalf("err %v, %d results", err, len(res))
	}
	// An optional failure does not stop.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/firmware/efi/efivars"), 0o755)
	m = &fakeMounter{fail: map[string]error{"efivars": unix.ENODEV}}
	res, err = MountAll(m, root, Early())
	if err != nil || res[4].Err == nil {
		t.Fatalf("optional failure: err %v res %+v", err, res[4])
	}
}

func TestMoveIntoParentsFirst(t *testing.T) {
	root := t.TempDir()
	m := &fakeMounter{}
	err := MoveInto(m, root, []Move{
		{From: "/cryptinit/mnt/u-data", Target: "/var/mnt/data"},
		{From: "/cryptinit/mnt/STATE", Target: "/system/state"},
		{From: "/cryptinit/mnt/EPHEMERAL", Target: "/var"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range m.calls {
		if c.flags != unix.MS_MOVE {
			t.Errorf("not a move: %+v", c)
		}
		order = append(order, strings.TrimPrefix(c.target, root))
	}
	if strings.Join(order, ",") != "/var,/system/state,/var/mnt/data" {
		t.Errorf("order %q", order)
	}
	if st, err := os.Stat(filepath.Join(root, "var/mnt/data")); err != nil || !st.IsDir() {
		t.Errorf("mount point not created: %v", err)
	}
}

func TestMoveIntoReadOnlyRoot(t *testing.T) {
	// Tests run as root, which ignores directory permissions: a file in
	// the way stands in for a read-only root.
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "var"), nil, 0o644)
	err := MoveInto(&fakeMounter{}, root, []Move{{From: "/x", Target: "/var/mnt/data"}})
	if err == nil || !strings.Contains(err.Error(), "mount point /var/mnt/data") {
		t.Fatalf("got %v", err)
	}
	m := &fakeMounter{fail: map[string]error{"state": errors.New("EINVAL")}}
	if err := MoveInto(m, t.TempDir(), []Move{{From: "/s", Target: "/system/state"}}); err == nil || !strings.Contains(err.Error(), "move /s to /system/state") {
		t.Fatalf("got %v", err)
	}
}
