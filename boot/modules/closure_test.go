package modules

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestClosure(t *testing.T) {
	dir := writeTables(t)
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/usb/host/xhci-hcd.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, &fakeProber{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		names            []string
		want, bi, missed []string
	}{
		// ext4's soft dependency crypto-crc32c is an alias for two modules: ship both.
		{[]string{"ext4"}, []string{"crc16", "crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"}, nil, nil},
		// xfs -> libcrc32c (hard) -> crc32c (soft pre, alias of crc32c_generic only).
		{[]string{"xfs"}, []string{"crc32c_generic", "libcrc32c", "xfs"}, nil, nil},
		// dash and underscore name the same module; a post softdep that matches nothing is skipped.
		{[]string{"dm-crypt"}, []string{"dm_crypt", "dm_mod"}, nil, nil},
		{[]string{"devname:mapper/control", "xhci-hcd", "nvme"}, []string{"dm_mod"}, []string{"xhci_hcd"}, []string{"nvme"}},
	}
	for _, tt := range tests {
		c := l.Closure(tt.names)
		if !reflect.DeepEqual(c.Modules, tt.want) || !reflect.DeepEqual(c.Builtin, tt.bi) || !reflect.DeepEqual(c.Missing, tt.missed) {
			t.Errorf("Closure(%v) = %v builtin %v missing %v, want %v builtin %v missing %v",
				tt.names, c.Modules, c.Builtin, c.Missing, tt.want, tt.bi, tt.missed)
		}
		for _, m := range c.Modules {
			if c.Paths[m] == "" {
				t.Errorf("Closure(%v): no path for %s", tt.names, m)
			}
		}
	}
}
