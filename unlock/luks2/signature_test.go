package luks2

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// Format refuses every signature unlock/probe knows, and writes nothing.
func TestFormatRefusesSignatures(t *testing.T) {
	for _, c := range []struct {
		name  string
		marks map[int64]string // offset -> bytes written there
	}{
		{"ext2", map[int64]string{0x438: "\x53\xef"}},
		{"xfs", map[int64]string{0: "XFSB"}},
		{"btrfs", map[int64]string{0x10040: "_BHRfS_M"}},
		{"swap", map[int64]string{4086: "SWAPSPACE2"}},
		{"LVM2", map[int64]string{512: "LABELONE", 512 + 24: "LVM2 001"}},
		{"LUKS2 (secondary", map[int64]string{0x4000: "SKUL\xba\xbe"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := luks2test.NewImage(t, imageSize)
			f := openRW(t, img)
			for off, b := range c.marks {
				if _, err := f.WriteAt([]byte(b), off); err != nil {
					t.Fatal(err)
				}
			}
			before := readFile(t, img)
			_, err := Format(f, imageSize, []byte("pw"), FormatOptions{KDF: kdfPBKDF2, DigestIterations: 1000})
			if !errors.Is(err, ErrHasSignature) || !strings.Contains(err.Error(), c.name) {
				t.Errorf("Format over %s: %v, want ErrHasSignature naming it", c.name, err)
			}
			if !bytes.Equal(before, readFile(t, img)) {
				t.Errorf("a refused Format over %s wrote to the device", c.name)
			}
		})
	}
}
