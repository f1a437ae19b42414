package boot

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeyboardVT: the prompt also asks on tty0 when the console is a serial
// line, and not when the console is a VT itself or the kernel has no VT.
func TestKeyboardVT(t *testing.T) {
	for _, tc := range []struct {
		name   string
		active string // /sys/class/tty/console/active; "" for none
		tty0   bool   // /dev/tty0 exists
		want   bool
	}{
		{"serial console, VT present", "ttyS0\n", true, true},
		{"VT and serial, serial last", "tty0 ttyS0\n", true, true},
		{"console is the VT", "ttyS0 tty0\n", true, false},
		{"console is tty1", "tty1\n", true, false},
		{"no VT in the kernel", "ttyS0\n", false, false},
		{"sysfs silent", "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys, dev := t.TempDir(), t.TempDir()
			if tc.active != "" {
				d := filepath.Join(sys, "class", "tty", "console")
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, "active"), []byte(tc.active), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.tty0 {
				// A regular file stands in for the device: only opening it matters here.
				if err := os.WriteFile(filepath.Join(dev, "tty0"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f := keyboardVT(sys, dev)
			if f != nil {
				defer f.Close()
			}
			if got := f != nil; got != tc.want {
				t.Errorf("keyboardVT opened tty0: %v, want %v", got, tc.want)
			}
		})
	}
}
