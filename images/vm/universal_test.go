package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptinit/cryptinit/images/uki"
)

// TestFromUKI: the kernel, initramfs and command line unpacked from a UKI
// are byte for byte the ones it was assembled from (the matrix boots what
// the UKI holds, not what happens to lie next to it in OUT).
func TestFromUKI(t *testing.T) {
	dir := t.TempDir()
	kernel := bytes.Repeat([]byte("kernel!"), 1000)
	initrd := bytes.Repeat([]byte("initrd"), 3333)
	osrel := []byte("ID=test\n")
	for name, b := range map[string][]byte{"vmlinuz": kernel, "initrd": initrd, "os-release": osrel} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "test.efi")
	spec := uki.Spec{Linux: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"),
		Cmdline: "console=ttyS0 root=PARTLABEL=ROOT", OSRel: filepath.Join(dir, "os-release")}
	if err := uki.Build(spec, "", "", path, nil); err != nil {
		t.Fatal(err)
	}
	a := &Artifacts{Kernel: "old-kernel", Initramfs: "old-initrd", Cmdline: "old", UKI: "old.efi", RootFS: "root.ext4"}
	u, err := a.FromUKI(path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		file string
		want []byte
	}{"kernel": {u.Kernel, kernel}, "initramfs": {u.Initramfs, initrd}} {
		got, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: %d bytes unpacked, want the %d assembled", name, len(got), len(c.want))
		}
	}
	if u.Cmdline != spec.Cmdline || u.UKI != path || u.RootFS != "root.ext4" {
		t.Errorf("got cmdline %q, UKI %q, root %q", u.Cmdline, u.UKI, u.RootFS)
	}
	if a.Kernel != "old-kernel" {
		t.Error("FromUKI changed the artifacts it copied")
	}
}
