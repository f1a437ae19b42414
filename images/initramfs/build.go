package initramfs

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"github.com/cryptinit/cryptinit/boot"
	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/klauspost/compress/zstd"
)

// Tool is a host program copied into the image, with its shared libraries.
type Tool struct{ Host, Image string }

// DefaultTools are the programs the init runs: mkfs for STATE (xfs) and
// EPHEMERAL (ext4), and Debian's dash as /bin/sh for cryptinit.debug=shell
// after a failed boot.
var DefaultTools = []Tool{
	{"/usr/sbin/mkfs.xfs", "sbin/mkfs.xfs"},
	{"/usr/sbin/mke2fs", "sbin/mkfs.ext4"},
	{"/usr/bin/dash", "bin/sh"},
}

// Options are the inputs of one initramfs. Nothing else goes in: the same
// options over the same files give the same bytes.
type Options struct {
	KernelVersion string  // the release the modules are for ("6.1.0-57-amd64")
	ModulesDir    string  // its module tree with depmod's tables; /lib/modules/<release> when empty
	Init          string  // the cryptinit binary, /init
	Classes       []Class // modules to ship, by class
	Omit          []string
	Tools         []Tool // DefaultTools when nil
	Config        string // machine config for /etc/cryptinit/config.yaml (optional)
	KMSCA         string // KMS CA certificate (optional)
	KMSCert       string // KMS client certificate (optional)
	KMSKey        string // KMS client key (optional)
	Compress      string // "zstd", "xz" or "none"
}

// Image is a built initramfs.
type Image struct {
	Selection Selection
	Raw       int64  // uncompressed cpio size
	Data      []byte // the compressed archive
}

// Build makes the initramfs of o.
func Build(o Options) (*Image, error) {
	if o.KernelVersion == "" {
		return nil, fmt.Errorf("initramfs: no kernel version")
	}
	if strings.Contains(o.KernelVersion, "/") || strings.Contains(o.KernelVersion, "..") {
		return nil, fmt.Errorf("initramfs: kernel version %q is not a release name (as uname -r prints it): it must not hold / or ..", o.KernelVersion)
	}
	if o.ModulesDir == "" {
		o.ModulesDir = filepath.Join("/lib/modules", o.KernelVersion)
	}
	if o.Tools == nil {
		o.Tools = DefaultTools
	}
	l, err := modules.Open(o.ModulesDir, nil)
	if err != nil {
		return nil, fmt.Errorf("initramfs: kernel %s: %w (run depmod, or pass --modules-dir)", o.KernelVersion, err)
	}
	sel := Select(l, o.Classes, o.Omit)
	a := Archive{}
	for _, d := range []string{"proc", "sys", "dev", "run", "sysroot", "etc/cryptinit"} {
		a.Dir(d, 0o755)
	}
	a.Dir("tmp", 0o1777) // sticky and world-writable, as tmpfs mounts it
	if err := addFile(a, o.Init, "init", 0o755); err != nil {
		return nil, fmt.Errorf("initramfs: the init: %w", err)
	}
	if err := addModules(a, o.ModulesDir, o.KernelVersion, sel.Modules); err != nil {
		return nil, err
	}
	done := map[string]bool{} // libraries already added, shared by the tools
	for _, t := range o.Tools {
		if err := addProgram(a, t, done); err != nil {
			return nil, err
		}
	}
	if err := addFile(a, "/etc/mke2fs.conf", "etc/mke2fs.conf", 0o644); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	for _, f := range []struct {
		host, image string
		mode        uint32
	}{
		{o.Config, "/etc/cryptinit/config.yaml", 0o644},
		{o.KMSCA, boot.KMSCAFile, 0o644},
		{o.KMSCert, boot.KMSClientCertFile, 0o644},
		{o.KMSKey, boot.KMSClientKeyFile, 0o600},
	} {
		if f.host == "" {
			continue
		}
		if err := addFile(a, f.host, f.image, f.mode); err != nil {
			return nil, fmt.Errorf("initramfs: %w", err)
		}
	}
	var raw bytes.Buffer
	if _, err := a.WriteTo(&raw); err != nil {
		return nil, fmt.Errorf("initramfs: cpio: %w", err)
	}
	data, err := Compress(o.Compress, raw.Bytes())
	if err != nil {
		return nil, err
	}
	return &Image{Selection: sel, Raw: int64(raw.Len()), Data: data}, nil
}

func addFile(a Archive, host, image string, mode uint32) error {
	b, err := os.ReadFile(host)
	if err != nil {
		return err
	}
	return a.File(image, mode, b)
}

// tables are depmod's text tables; each is cut down to the shipped modules
// (the init and u-root's kmodule read them; the binary .bin indexes only
// serve modprobe and are left out). byField is the field naming the module.
var tables = []struct {
	name    string
	byField int // -1: copy whole
}{
	{"modules.dep", 0},
	{"modules.alias", 2},
	{"modules.softdep", 1},
	{"modules.symbols", 2},
	{"modules.devname", 0},
	{"modules.order", 0},
	{"modules.builtin", -1},
	{"modules.builtin.modinfo", -1},
}

func addModules(a Archive, dir, release string, c modules.Closure) error {
	root := path.Join("lib/modules", release)
	for _, m := range c.Modules {
		rel := c.Paths[m]
		if !filepath.IsLocal(rel) || !strings.Contains(path.Base(rel), ".ko") {
			return fmt.Errorf("initramfs: module %s: modules.dep in %s names it %q, not a .ko file inside the module tree; refusing it (regenerate the tables with depmod)", m, dir, rel)
		}
		if err := addFile(a, filepath.Join(dir, rel), path.Join(root, rel), 0o644); err != nil {
			return fmt.Errorf("initramfs: module %s: %w", m, err)
		}
	}
	for _, t := range tables {
		b, err := os.ReadFile(filepath.Join(dir, t.name))
		if os.IsNotExist(err) && t.name != "modules.dep" {
			continue
		}
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		if t.byField >= 0 {
			b = filterTable(b, t.byField, c.Paths)
		}
		if err := a.File(path.Join(root, t.name), 0o644, b); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	return nil
}

// filterTable keeps the lines whose field names a shipped module (by
// module name or by path, as modules.dep and modules.order spell it).
func filterTable(b []byte, field int, keep map[string]string) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) <= field || strings.HasPrefix(line, "#") {
			continue
		}
		name := modules.Normalize(modules.ModuleName(strings.TrimSuffix(f[field], ":")))
		if _, ok := keep[name]; ok {
			out.WriteString(line)
		}
	}
	return out.Bytes()
}

// libDirs are where the dynamic loader looks without an ld.so.cache
// (Debian's multiarch directories first).
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// addProgram copies a dynamically linked program with its ELF interpreter
// and every library it needs, each at the path the loader will look in.
// done holds the libraries and interpreters added already (by other tools).
func addProgram(a Archive, t Tool, done map[string]bool) error {
	if err := addFile(a, t.Host, t.Image, 0o755); err != nil {
		return fmt.Errorf("initramfs: tool: %w", err)
	}
	todo := []string{t.Host}
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("initramfs: %s: %w", p, err)
		}
		libs, err := f.ImportedLibraries()
		interp := ""
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b, _ := io.ReadAll(prog.Open())
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("initramfs: %s: %w", p, err)
		}
		if interp != "" && !done[interp] {
			done[interp] = true
			if err := addFile(a, interp, interp, 0o755); err != nil {
				return fmt.Errorf("initramfs: %s: interpreter: %w", p, err)
			}
		}
		for _, lib := range libs {
			if done[lib] {
				continue
			}
			done[lib] = true
			found := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("initramfs: %s needs %s, found in none of %v", p, lib, libDirs)
			}
			if err := addFile(a, found, found, 0o755); err != nil {
				return fmt.Errorf("initramfs: %w", err)
			}
			todo = append(todo, found)
		}
	}
	return nil
}

// Compress compresses a cpio with fixed settings, so the output depends on
// the input alone, and pads it with zeros to a multiple of 4 bytes: the
// kernel looks for a further archive appended to this one (a machine
// config, a test overlay) only at a 4-byte boundary, and skips zeros to
// reach it. xz streams are 4-byte aligned already; a zstd frame is not
// (zstd(1) reports the padding as an unknown frame after the data). zstd is in-process (klauspost/compress, best level, one
// thread); xz runs the xz tool (-T1 --x86 --lzma2=preset=6 --check=crc32):
// no Go xz encoder has the x86 BCJ filter or liblzma's ratio, and the
// virtio image's 6 MB budget needs both.
func Compress(kind string, raw []byte) ([]byte, error) {
	b, err := compress(kind, raw)
	if err != nil {
		return nil, err
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b, nil
}

func compress(kind string, raw []byte) ([]byte, error) {
	switch kind {
	case "none":
		return raw, nil
	case "zstd", "":
		var out bytes.Buffer
		enc, err := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20))
		if err != nil {
			return nil, fmt.Errorf("initramfs: zstd: %w", err)
		}
		if _, err := enc.Write(raw); err != nil {
			return nil, fmt.Errorf("initramfs: zstd: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("initramfs: zstd: %w", err)
		}
		return out.Bytes(), nil
	case "xz":
		cmd := exec.Command("xz", "-T1", "--x86", "--lzma2=preset=6", "--check=crc32", "-c")
		cmd.Stdin = bytes.NewReader(raw)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("initramfs: xz: %w: %s", err, errb.String())
		}
		return out.Bytes(), nil
	}
	return nil, fmt.Errorf("initramfs: compression %q: want zstd, xz or none", kind)
}

// Report writes what went into img: the modules of each class, then sizes.
func Report(w io.Writer, img *Image, compress string) {
	for _, c := range img.Selection.Classes {
		fmt.Fprintf(w, "image: %-12s %d modules: %s\n", c.Name, len(c.Modules), strings.Join(c.Modules, " "))
		if len(c.Builtin) > 0 {
			fmt.Fprintf(w, "image: %-12s built into the kernel: %s\n", c.Name, strings.Join(c.Builtin, " "))
		}
		if len(c.Missing) > 0 {
			fmt.Fprintf(w, "image: %-12s WARNING: not in this kernel: %s\n", c.Name, strings.Join(c.Missing, " "))
		}
	}
	if len(img.Selection.Kept) > 0 {
		fmt.Fprintf(w, "image: kept although omitted (needed by other modules): %s\n", strings.Join(img.Selection.Kept, " "))
	}
	fmt.Fprintf(w, "image: %d modules; initramfs %d bytes raw, %d bytes %s\n",
		len(img.Selection.Modules.Modules), img.Raw, len(img.Data), compress)
}
