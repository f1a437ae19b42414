package main

import (
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// luks format on a device the header fills warns as cryptsetup 2.6 does
// ("too small for activation, there is no remaining space for data") and
// still formats (exit 0); with room for a sector of data it says nothing.
func TestLuksFormatTooSmallForData(t *testing.T) {
	const warn = "too small for activation, there is no remaining space for data"
	for _, c := range []struct {
		name string
		size int64
		warn bool
		fail bool
	}{
		{name: "header area only", size: 16 << 20, warn: true},
		{name: "less than a sector of data", size: 16<<20 + 512, warn: true},
		{name: "one sector of data", size: 16<<20 + 4096},
		{name: "room for data", size: 20 << 20},
		{name: "smaller than the header area", size: 1 << 20, fail: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := luks2test.NewImage(t, c.size)
			var stdout, stderr strings.Builder
			code := run(append([]string{"luks", "format", img, "--key-file", luks2test.KeyFile(t, []byte("k"))}, cheapKDF...), strings.NewReader(""), &stdout, &stderr)
			if c.fail {
				if code == 0 {
					t.Fatalf("formatted a %d-byte device", c.size)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if got := strings.Contains(stderr.String(), warn); got != c.warn {
				t.Errorf("warning printed %v, want %v; stderr %q", got, c.warn, stderr.String())
			}
			if c.warn && strings.Contains(stdout.String(), warn) {
				t.Error("the warning went to stdout")
			}
		})
	}
}
