package devices

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func addBlock(t *testing.T, sys, name, uevent string, sectors int) {
	t.Helper()
	d := filepath.Join(sys, "class", "block", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "uevent"), []byte(uevent), 0o644)
	os.WriteFile(filepath.Join(d, "size"), []byte(strconv.Itoa(sectors)+"\n"), 0o644)
}

type mknodRec struct {
	paths []string
	devs  []int
}

func newFinder(t *testing.T) (*Finder, *mknodRec) {
	root := t.TempDir()
	rec := &mknodRec{}
	f := &Finder{Sys: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev"), Poll: 5 * time.Millisecond,
		Mknod: func(path string, mode uint32, dev int) error {
			if mode&unix.S_IFBLK == 0 {
				t.Errorf("mknod %s without S_IFBLK", path)
			}
			rec.paths = append(rec.paths, path)
			rec.devs = append(rec.devs, dev)
			return os.WriteFile(path, nil, 0o600)
		}}
	return f, rec
}

func TestScanAndWait(t *testing.T) {
	f, rec := newFinder(t)
	addBlock(t, f.Sys, "vda", "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", 4096)
	addBlock(t, f.Sys, "vda1", "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=META\n", 2048)
	addBlock(t, f.Sys, "vda2", "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=STATE\n", 204800)
	os.MkdirAll(f.Dev, 0o755)
	os.WriteFile(filepath.Join(f.Dev, "vda1"), nil, 0o600) // devtmpfs made this one

	found, err := f.Wait(context.Background(), []string{"STATE"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := found.ByLabel["STATE"]
	if st.Path != filepath.Join(f.Dev, "vda2") || st.Major != 254 || st.Minor != 2 || st.SizeByte != 204800*512 {
		t.Errorf("STATE = %+v", st)
	}
	if _, ok := found.ByLabel["META"]; !ok {
		t.Error("META not reported although present")
	}
	if len(rec.paths) != 1 || rec.paths[0] != st.Path || rec.devs[0] != int(unix.Mkdev(254, 2)) {
		t.Errorf("mknod calls %v %v, want only vda2 254:2", rec.paths, rec.devs)
	}
}

func TestWaitForLateDevice(t *testing.T) {
	f, _ := newFinder(t)
	os.MkdirAll(filepath.Join(f.Sys, "class", "block"), 0o755)
	go func() {
		time.Sleep(30 * time.Millisecond)
		addBlock(t, f.Sys, "vdb3", "MAJOR=254\nMINOR=19\nDEVNAME=vdb3\nDEVTYPE=partition\nPARTNAME=EPHEMERAL\n", 1)
	}()
	found, err := f.Wait(context.Background(), []string{"EPHEMERAL"}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if found.ByLabel["EPHEMERAL"].Name != "vdb3" {
		t.Errorf("got %+v", found.ByLabel)
	}
}

func TestWaitGivesUpAndSaysWhatItSaw(t *testing.T) {
	f, _ := newFinder(t)
	addBlock(t, f.Sys, "sda1", "MAJOR=8\nMINOR=1\nDEVNAME=sda1\nDEVTYPE=partition\nPARTNAME=ESP\n", 1)
	start := time.Now()
	_, err := f.Wait(context.Background(), []string{"STATE", "ESP"}, 60*time.Millisecond)
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("got %v, want NotFoundError", err)
	}
	if time.Since(start) < 60*time.Millisecond {
		t.Error("gave up before the timeout")
	}
	if len(nf.Missing) != 1 || nf.Missing[0] != "STATE" || !strings.Contains(err.Error(), "sda1 (8:1, label ESP)") {
		t.Errorf("error does not say what it saw: %v", err)
	}
	// Nothing at all: the message points at the driver.
	f2, _ := newFinder(t)
	_, err = f2.Wait(context.Background(), []string{"STATE"}, 0)
	if err == nil || !strings.Contains(err.Error(), "no block devices at all") {
		t.Errorf("empty sysfs: %v", err)
	}
}

func TestDuplicateLabels(t *testing.T) {
	f, _ := newFinder(t)
	addBlock(t, f.Sys, "vda2", "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nPARTNAME=STATE\n", 1)
	addBlock(t, f.Sys, "vdb2", "MAJOR=254\nMINOR=18\nDEVNAME=vdb2\nPARTNAME=STATE\n", 1)
	found, err := f.Wait(context.Background(), []string{"STATE"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if found.ByLabel["STATE"].Name != "vda2" || len(found.Dups) != 1 {
		t.Errorf("got %+v dups %v", found.ByLabel["STATE"], found.Dups)
	}
}

func TestResolve(t *testing.T) {
	found := &Found{ByLabel: map[string]Block{"ROOT": {Name: "vdb1", Path: "/dev/vdb1"}}}
	for _, tc := range []struct {
		spec, want string
		ok         bool
	}{
		{"PARTLABEL=ROOT", "/dev/vdb1", true},
		{"/dev/sda3", "/dev/sda3", true},
		{"PARTLABEL=NOPE", "", false},
		{"UUID=1234", "", false},
	} {
		got, err := Resolve(tc.spec, found)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v", tc.spec, got, err)
		}
	}
	if Label("PARTLABEL=ESP") != "ESP" || Label("/dev/vda") != "" {
		t.Error("Label")
	}
}
