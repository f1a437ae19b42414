package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Artifacts are the files `make image` leaves in OUT.
type Artifacts struct {
	Dir        string // OUT
	Kernel     string // vmlinuz
	Initramfs  string // initramfs.img (xz), cryptinit as /init
	RootFS     string // root.ext4, the tiny real root
	Smoke      string // smoke-overlay.cpio, an /init for the harness self-test
	UKI        string // cryptinit.efi, signed
	VarsSB     string // OVMF_VARS with our Secure Boot keys enrolled
	DBKey      string // db signing key, to sign UKIs made by tests
	DBCert     string // db certificate
	Cmdline    string // the kernel command line baked into the UKI
	OSRelease  string // os-release used for UKIs made by tests
	InitBinary string // out/bin/cryptinit
	PCRKey     string // keys/pcr-key.pem when the build signed PCR policies, else ""
	Cryptctl   string // bin/cryptctl when the image build could build it, else ""
}

// Firmware files from Debian's ovmf package.
const (
	ovmfCode   = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfCodeSB = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	ovmfVars   = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// DefaultCmdline is the command line of images/build.sh; keep them equal.
const DefaultCmdline = "console=ttyS0 loglevel=4 root=PARTLABEL=ROOT rootfstype=ext4 ro"

// OutDir is CRYPTINIT_OUT, else the out/ folder at the module root.
func OutDir() (string, error) {
	if d := os.Getenv("CRYPTINIT_OUT"); d != "" {
		return filepath.Abs(d)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "out"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("vm: no go.mod above the working directory; set CRYPTINIT_OUT")
		}
		dir = parent
	}
}

// LoadArtifacts finds the artifacts of `make image` and checks they exist.
func LoadArtifacts() (*Artifacts, error) {
	out, err := OutDir()
	if err != nil {
		return nil, err
	}
	moduleRoot := filepath.Dir(out)
	a := &Artifacts{
		Dir:        out,
		Kernel:     filepath.Join(out, "vmlinuz"),
		Initramfs:  filepath.Join(out, "initramfs.img"),
		RootFS:     filepath.Join(out, "root.ext4"),
		Smoke:      filepath.Join(out, "smoke-overlay.cpio"),
		UKI:        filepath.Join(out, "cryptinit.efi"),
		VarsSB:     filepath.Join(out, "OVMF_VARS_enrolled.fd"),
		DBKey:      filepath.Join(out, "keys", "db.key"),
		DBCert:     filepath.Join(out, "keys", "db.crt"),
		Cmdline:    DefaultCmdline,
		OSRelease:  filepath.Join(moduleRoot, "images", "root", "os-release"),
		InitBinary: filepath.Join(out, "bin", "cryptinit"),
	}
	for _, f := range []string{a.Kernel, a.Initramfs, a.RootFS, a.Smoke, a.UKI, a.VarsSB, a.DBKey, a.DBCert} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("vm: missing %s (run `make image`): %w", f, err)
		}
	}
	a.pcrSigning()
	return a, nil
}

// Require skips t unless CRYPTINIT_VM=1, and fails it when the artifacts are
// missing (make test-vm builds them first, so missing means a broken build).
func Require(t testing.TB) *Artifacts {
	t.Helper()
	if os.Getenv("CRYPTINIT_VM") != "1" {
		t.Skip("VM test: set CRYPTINIT_VM=1 (make test-vm) to boot QEMU")
	}
	a, err := LoadArtifacts()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// HasInit reports whether the image build found a cryptinit binary to pack.
func (a *Artifacts) HasInit() bool {
	_, err := os.Stat(a.InitBinary)
	return err == nil
}
