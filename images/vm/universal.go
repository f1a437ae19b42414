package vm

import (
	"debug/pe"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// UniversalUKI is the UKI the hardware matrix boots: CRYPTINIT_UNIVERSAL_UKI,
// else OUT/universal/cryptinit.efi (`make image` builds it with the drivers
// of real machines: NVMe, AHCI, SCSI, USB storage and keyboards, Intel NICs).
func UniversalUKI(a *Artifacts) string {
	if p := os.Getenv("CRYPTINIT_UNIVERSAL_UKI"); p != "" {
		return p
	}
	return filepath.Join(a.Dir, "universal", "cryptinit.efi")
}

// FromUKI returns a copy of a whose kernel, initramfs and command line are
// the ones inside the UKI at path (unpacked into dir), so that nodes boot
// exactly what that UKI holds, whoever built it, and per-test UKIs (a
// machine config overlay) are made from its initramfs. UEFI boots without
// changes boot the UKI itself.
func (a *Artifacts) FromUKI(path, dir string) (*Artifacts, error) {
	f, err := pe.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vm: open UKI %s: %w", path, err)
	}
	defer f.Close()
	section := func(name string) ([]byte, error) {
		s := f.Section(name)
		if s == nil {
			return nil, fmt.Errorf("vm: UKI %s has no %s section", path, name)
		}
		b, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("vm: UKI %s: read %s: %w", path, name, err)
		}
		// Data is padded to the file alignment; VirtualSize is the payload.
		if int(s.VirtualSize) < len(b) {
			b = b[:s.VirtualSize]
		}
		return b, nil
	}
	u := *a
	u.UKI = path
	for _, s := range []struct {
		name string
		dst  *string
		file string
	}{{".linux", &u.Kernel, "vmlinuz"}, {".initrd", &u.Initramfs, "initramfs.img"}} {
		b, err := section(s.name)
		if err != nil {
			return nil, err
		}
		*s.dst = filepath.Join(dir, s.file)
		if err := os.WriteFile(*s.dst, b, 0o644); err != nil {
			return nil, err
		}
	}
	cmdline, err := section(".cmdline")
	if err != nil {
		return nil, err
	}
	u.Cmdline = strings.TrimSpace(strings.TrimRight(string(cmdline), "\x00"))
	return &u, nil
}

// RequireUniversal is RequireInit for the universal UKI: it fails the test
// when that UKI is missing (make image builds it).
func RequireUniversal(t *testing.T) *Artifacts {
	t.Helper()
	a := RequireInit(t)
	u, err := a.FromUKI(UniversalUKI(a), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return u
}
