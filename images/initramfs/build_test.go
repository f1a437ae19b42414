package initramfs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/klauspost/compress/zstd"
)

// fakeKernel writes a module tree with depmod's tables for three modules.
func fakeKernel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep":                   "kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-mod.ko:\nkernel/fs/xfs/xfs.ko:\n",
		"modules.alias":                 "# Aliases extracted from modules themselves.\nalias devname:mapper/control dm_mod\nalias fs-xfs xfs\n",
		"modules.softdep":               "",
		"modules.builtin":               "kernel/drivers/usb/host/xhci-hcd.ko\n",
		"modules.order":                 "kernel/fs/xfs/xfs.ko\nkernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-crypt.ko\n",
		"kernel/drivers/md/dm-crypt.ko": "dm-crypt module",
		"kernel/drivers/md/dm-mod.ko":   "dm-mod module",
		"kernel/fs/xfs/xfs.ko":          "xfs module",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestBuildReproducible: two builds of the same inputs are the same bytes,
// whatever the files' times, for every compression; and the archive holds
// what was asked for, with its dependencies and no other module.
func TestBuildReproducible(t *testing.T) {
	dir := fakeKernel(t)
	init := filepath.Join(t.TempDir(), "cryptinit")
	if err := os.WriteFile(init, []byte("#!/bin/false\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kinds := []string{"none", "zstd"}
	if testenv.Have(t, "xz") {
		kinds = append(kinds, "xz")
	}
	for _, kind := range kinds {
		o := Options{KernelVersion: "6.1.0-test", ModulesDir: dir, Init: init, Tools: []Tool{},
			Classes: []Class{{Name: "crypto", Modules: []string{"dm-crypt", "xhci-hcd"}}}, Compress: kind}
		a, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		// Touch every input: times must not reach the archive.
		later := filepath.Join(dir, "kernel/drivers/md/dm-mod.ko")
		if err := os.Chtimes(later, fileTime(t), fileTime(t)); err != nil {
			t.Fatal(err)
		}
		b, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Data, b.Data) {
			t.Errorf("%s: two builds differ (%d and %d bytes)", kind, len(a.Data), len(b.Data))
		}
		if got := strings.Join(a.Selection.Modules.Modules, " "); got != "dm_crypt dm_mod" {
			t.Errorf("%s: modules %q, want dm_crypt and its dependency dm_mod", kind, got)
		}
		if got := strings.Join(a.Selection.Classes[0].Builtin, " "); got != "xhci_hcd" {
			t.Errorf("%s: builtin %q, want xhci_hcd", kind, got)
		}
		if kind == "none" {
			list := listCpio(t, a.Data)
			for _, want := range []string{"init", "lib/modules/6.1.0-test/kernel/drivers/md/dm-mod.ko", "lib/modules/6.1.0-test/modules.dep", "sysroot"} {
				if !strings.Contains(list, want+"\n") {
					t.Errorf("archive lacks %s:\n%s", want, list)
				}
			}
			if strings.Contains(list, "xfs.ko") {
				t.Errorf("archive ships xfs, which nothing asked for:\n%s", list)
			}
		}
	}
}

func fileTime(t *testing.T) time.Time { return time.Now().Add(time.Hour) }

// listCpio lists an archive with cpio(1), an independent reader.
func listCpio(t *testing.T, data []byte) string {
	t.Helper()
	cpio := testenv.NeedTool(t, "cpio", "apt-get install cpio")
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	return string(out)
}

// TestSelectOmit: an omitted name is left out, unless a shipped module
// depends on it; then it stays and is reported.
func TestSelectOmit(t *testing.T) {
	l, err := modules.Open(fakeKernel(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	classes := []Class{{Name: "a", Modules: []string{"dm-crypt", "xfs"}}}
	tests := []struct {
		omit       []string
		want, kept string
	}{
		{nil, "dm_crypt dm_mod xfs", ""},
		{[]string{"xfs"}, "dm_crypt dm_mod", ""},
		{[]string{"dm-mod"}, "dm_crypt dm_mod xfs", "dm_mod"},
		{[]string{"dm_crypt", "dm-mod"}, "xfs", ""},
	}
	for _, tt := range tests {
		sel := Select(l, classes, tt.omit)
		if got := strings.Join(sel.Modules.Modules, " "); got != tt.want {
			t.Errorf("omit %v: modules %q, want %q", tt.omit, got, tt.want)
		}
		if got := strings.Join(sel.Kept, " "); got != tt.kept {
			t.Errorf("omit %v: kept %q, want %q", tt.omit, got, tt.kept)
		}
	}
}

// TestCompressAligned: every compressed image ends on a 4-byte boundary, so
// an archive appended to it (a config overlay) is found by the kernel, and
// the data still decompresses to the archive.
func TestCompressAligned(t *testing.T) {
	var raw bytes.Buffer
	a := Archive{}
	a.File("init", 0o755, []byte("cryptinit, an odd-sized file."))
	if _, err := a.WriteTo(&raw); err != nil {
		t.Fatal(err)
	}
	kinds := []string{"none", "zstd"}
	if testenv.Have(t, "xz") {
		kinds = append(kinds, "xz")
	}
	for _, kind := range kinds {
		b, err := Compress(kind, raw.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if len(b)%4 != 0 {
			t.Errorf("%s: %d bytes, not a multiple of 4: an appended archive would not be found", kind, len(b))
		}
		if kind == "zstd" {
			d, err := zstd.NewReader(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.DecodeAll(bytes.TrimRight(b, "\x00"), nil)
			if err != nil || !bytes.Equal(got, raw.Bytes()) {
				t.Errorf("zstd: padded image does not decompress to the archive: %v", err)
			}
		}
	}
}

// TestBuildRefusesModulePathsOutsideTree: a modules.dep line naming a file
// outside the module tree ("../../../init:"), reached by name, through an
// alias or a soft dependency, is refused: it would read a host file into
// the image at /init, replacing cryptinit.
func TestBuildRefusesModulePathsOutsideTree(t *testing.T) {
	tests := []struct {
		name, alias, softdep, dep string
		want                      string // --modules
	}{
		{name: "by name", dep: "../../../init:\n", want: "init"},
		{name: "alias", dep: "../../../init:\n", alias: "alias evil init\n", want: "evil"},
		{name: "softdep", dep: "../../../init:\n", softdep: "softdep xfs pre: init\n", want: "xfs"},
		{name: "not a module", dep: "kernel/init:\n", want: "init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "lib", "modules", "6.1.0-test")
			files := map[string]string{
				"init":                                        "EVIL, a host file",
				"kernel/init":                                 "EVIL, not a module",
				"lib/modules/6.1.0-test/modules.dep":          "kernel/fs/xfs/xfs.ko:\n" + tt.dep,
				"lib/modules/6.1.0-test/modules.alias":        tt.alias,
				"lib/modules/6.1.0-test/modules.softdep":      tt.softdep,
				"lib/modules/6.1.0-test/kernel/init":          "EVIL, not a module",
				"lib/modules/6.1.0-test/kernel/fs/xfs/xfs.ko": "xfs module",
				"cryptinit":                                   "#!/bin/false\n",
			}
			for name, content := range files {
				p := filepath.Join(top, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			img, err := Build(Options{KernelVersion: "6.1.0-test", ModulesDir: dir, Init: filepath.Join(top, "cryptinit"), Tools: []Tool{},
				Classes: []Class{{Name: "modules", Modules: []string{tt.want}}}, Compress: "none"})
			if err == nil {
				t.Fatalf("built an image with modules %v from modules.dep %q; want an error", img.Selection.Modules.Modules, tt.dep)
			}
			if !strings.Contains(err.Error(), "module init") {
				t.Errorf("error %q does not name the module", err)
			}
		})
	}
}

// TestBuildRefusesBadKernelVersion: the release is a path element of the
// module tree and of the image; "/" or ".." in it is refused.
func TestBuildRefusesBadKernelVersion(t *testing.T) {
	dir := fakeKernel(t)
	for _, v := range []string{"../../etc", "6.1/../../x", "..", "a/b"} {
		_, err := Build(Options{KernelVersion: v, ModulesDir: dir, Init: filepath.Join(dir, "modules.dep"), Tools: []Tool{}, Compress: "none"})
		if err == nil || !strings.Contains(err.Error(), "not a release name") {
			t.Errorf("kernel version %q: err = %v, want a refusal", v, err)
		}
	}
}

// TestArchiveOneSourcePerPath: a path added twice, or a file that is also
// the directory of another entry, is an error, not a silent replacement.
func TestArchiveOneSourcePerPath(t *testing.T) {
	a := Archive{}
	if err := a.File("init", 0o755, []byte("cryptinit")); err != nil {
		t.Fatal(err)
	}
	if err := a.File("/lib/../init", 0o644, []byte("other")); err == nil {
		t.Errorf("second file at init: no error")
	}
	if err := a.Symlink("init", "bin/sh"); err == nil {
		t.Errorf("symlink over init: no error")
	}
	if err := a.Dir("init", 0o755); err == nil {
		t.Errorf("directory over init: no error")
	}
	if string(a["init"].Data) != "cryptinit" {
		t.Errorf("init replaced: %q", a["init"].Data)
	}
	if err := a.Dir("tmp", 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := a.Dir("tmp", 0o1777); err != nil {
		t.Errorf("same directory twice: %v", err)
	}
	if err := a.Dir("tmp", 0o755); err == nil {
		t.Errorf("directory with another mode: no error")
	}
	if err := a.File("init/x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(io.Discard); err == nil {
		t.Errorf("init is a file and a directory: WriteTo gave no error")
	}
}

// TestBuildTmpSticky: /tmp in the image is 01777 (drwxrwxrwt), so a tool
// run by the init as another user can use it, as on a tmpfs /tmp.
func TestBuildTmpSticky(t *testing.T) {
	dir := fakeKernel(t)
	img, err := Build(Options{KernelVersion: "6.1.0-test", ModulesDir: dir, Init: filepath.Join(dir, "modules.dep"), Tools: []Tool{}, Compress: "none"})
	if err != nil {
		t.Fatal(err)
	}
	cpio := testenv.NeedTool(t, "cpio", "apt-get install cpio")
	cmd := exec.Command(cpio, "-itv", "--quiet")
	cmd.Stdin = bytes.NewReader(img.Data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == "tmp" {
			if f[0] != "drwxrwxrwt" {
				t.Errorf("tmp is %s, want drwxrwxrwt", f[0])
			}
			return
		}
	}
	t.Errorf("no tmp in the image:\n%s", out)
}

// TestFileTooLarge: a file of 4 GiB or more does not fit newc's 32-bit
// size field; it is refused, not written with its size cut to 32 bits.
// (checkSize is what File calls; no 4 GiB buffer is allocated here.)
func TestFileTooLarge(t *testing.T) {
	for _, tt := range []struct {
		n  int64
		ok bool
	}{{0, true}, {1<<32 - 1, true}, {1 << 32, false}, {1<<32 + 5, false}} {
		if err := checkSize("big", tt.n); (err == nil) != tt.ok {
			t.Errorf("%d bytes: err = %v, want ok %v", tt.n, err, tt.ok)
		}
	}
}
