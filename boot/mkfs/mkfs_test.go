package mkfs

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

func TestCommand(t *testing.T) {
	prog, args, env, err := Command("", "/dev/mapper/luks2-STATE", "STATE")
	if err != nil || prog != "mkfs.xfs" || !reflect.DeepEqual(args, []string{"-f", "-q", "-L", "STATE", "/dev/mapper/luks2-STATE"}) {
		t.Errorf("xfs: %s %q %v", prog, args, err)
	}
	for _, want := range []string{"TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("xfs env lacks %s: %q", want, env)
		}
	}
	prog, args, env, err = Command("ext4", "/dev/x", "u-a-very-long-volume-name")
	if err != nil || prog != "mkfs.ext4" || args[3] != "u-a-very-long-vo" || slices.Contains(env, "TEST_DIR=1") {
		t.Errorf("ext4: %s %q %q %v", prog, args, env, err)
	}
	if _, _, _, err := Command("btrfs", "/dev/x", ""); err == nil {
		t.Error("btrfs accepted")
	}
}

func TestMakeFindsAndReports(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "sbin", "mkfs.xfs"), []byte("#!/bin/sh\n"), 0o755)
	var gotPath string
	m := Maker{Root: root, Run: func(_ context.Context, path string, args, env []string) ([]byte, error) {
		gotPath = path
		return []byte("mkfs.xfs: bad things\n"), errors.New("exit status 1")
	}}
	err := m.Make(context.Background(), "xfs", "/dev/vda3", "EPHEMERAL")
	if gotPath != "/sbin/mkfs.xfs" || err == nil || !strings.Contains(err.Error(), "bad things") {
		t.Errorf("path %q err %v", gotPath, err)
	}
	if err := m.Make(context.Background(), "ext4", "/dev/vda3", ""); err == nil || !strings.Contains(err.Error(), "not in the image") {
		t.Errorf("missing mkfs.ext4: %v", err)
	}
}

// TestRealSmallXFS proves the environment escape hatch with the real
// mkfs.xfs on a 100 MiB image file (Talos's STATE size).
func TestRealSmallXFS(t *testing.T) {
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		testenv.Missing(t, "mkfs.xfs not installed (images/setup.sh installs xfsprogs)")
	}
	img := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 100<<20); err != nil {
		t.Fatal(err)
	}
	if err := (Maker{}).Make(context.Background(), "xfs", img, "STATE"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	f, _ := os.Open(img)
	defer f.Close()
	f.ReadAt(b, 0)
	if string(b) != "XFSB" {
		t.Errorf("no XFS superblock: %q", b)
	}
}
