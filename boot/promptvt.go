package boot

import (
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// isVT matches the kernel's virtual terminals (tty0 is the foreground one).
var isVT = regexp.MustCompile(`^tty[0-9]+$`)

// keyboardVT opens the foreground virtual terminal, where a USB or PS/2
// keyboard types, so the passphrase prompt also asks there when the console
// is a serial line (console=ttyS0 on a server with a screen and keyboard).
// nil when the console already is a VT (one reader per terminal: two would
// split what is typed), or when the kernel has no VT.
func keyboardVT(sys, dev string) *os.File {
	if isVT.MatchString(consoleTTY(sys)) {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(dev, "tty0"), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	return f
}
