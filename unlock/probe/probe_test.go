package probe

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

const testSize = 64 << 20

func probeFile(t *testing.T, p string) *Result {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	res, err := Probe(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRealTools(t *testing.T) {
	tests := []struct {
		want string
		size int64
		tool string
		args []string
	}{
		{"xfs", 320 << 20, "mkfs.xfs", []string{"-q", "-f"}},
		{"ext4", testSize, "mkfs.ext4", []string{"-q", "-F"}},
		{"ext2", testSize, "mkfs.ext2", []string{"-q", "-F"}},
		{"ext3", testSize, "mkfs.ext3", []string{"-q", "-F"}},
		{"vfat", testSize, "mkfs.vfat", nil},
		{"swap", testSize, "mkswap", nil},
		{"LUKS2", testSize, "cryptsetup", []string{"luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-"}},
		{"LUKS1", testSize, "cryptsetup", []string{"luksFormat", "-q", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", "-"}},
		{"btrfs", 128 << 20, "mkfs.btrfs", []string{"-q", "-f"}},
		{"squashfs", 0, "mksquashfs", nil},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			path, err := exec.LookPath(tt.tool)
			if err != nil {
				testenv.Missing(t, "%s not installed (images/setup.sh installs the CI set)", tt.tool)
			}
			img := luks2test.NewImage(t, tt.size)
			cmd := exec.Command(path, append(tt.args, img)...)
			if tt.tool == "cryptsetup" {
				cmd.Stdin = strings.NewReader("pw")
			}
			if tt.tool == "mksquashfs" {
				os.Remove(img)
				cmd = exec.Command(path, t.TempDir(), img, "-quiet", "-noappend")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.tool, err, out)
			}
			res := probeFile(t, img)
			if res.Empty() || len(res.Signatures) == 0 || res.Signatures[0].Name != tt.want {
				t.Fatalf("found %v, want %s", res.Signatures, tt.want)
			}
		})
	}
}

func TestHandMade(t *testing.T) {
	put := func(b []byte, off int64, s string) { copy(b[off:], s) }
	tests := []struct {
		want string
		make func(b []byte)
	}{
		{"LVM2 PV", func(b []byte) { put(b, 512, "LABELONE"); put(b, 512+24, "LVM2 001") }},
		{"ZFS member", func(b []byte) { binary.LittleEndian.PutUint64(b[128<<10+3<<10:], 0x00bab10c) }},
		{"ZFS member", func(b []byte) { binary.BigEndian.PutUint64(b[len(b)-256<<10+128<<10:], 0x00bab10c) }},
		{"squashfs", func(b []byte) { put(b, 0, "hsqs") }},
		{"iso9660", func(b []byte) { put(b, 32769, "CD001") }},
		{"bcache", func(b []byte) {
			put(b, 4096+24, "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81")
		}},
		{"MD RAID (v1.2)", func(b []byte) { binary.LittleEndian.PutUint32(b[4096:], 0xa92b4efc) }},
		{"MD RAID (v1.1)", func(b []byte) { binary.LittleEndian.PutUint32(b[0:], 0xa92b4efc) }},
		{"MD RAID (v1.0)", func(b []byte) { binary.LittleEndian.PutUint32(b[(len(b)-8192)&^4095:], 0xa92b4efc) }},
		{"MD RAID (v0.90)", func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-64<<10:], 0xa92b4efc) }},
		{"LUKS2 (secondary header)", func(b []byte) { put(b, 16<<10, "SKUL\xba\xbe") }},
		{"LUKS2 (secondary header)", func(b []byte) { put(b, 4<<20, "SKUL\xba\xbe") }},
		{"btrfs", func(b []byte) { put(b, 0x10040, "_BHRfS_M") }},
		{"GPT partition table", func(b []byte) { put(b, 510, "\x55\xaa"); put(b, 512, "EFI PART") }},
		{"f2fs", func(b []byte) { binary.LittleEndian.PutUint32(b[1024:], 0xF2F52010) }},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b := make([]byte, 16<<20)
			tt.make(b)
			res, err := Probe(mem(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Signatures) != 1 || res.Signatures[0].Name != tt.want || res.Empty() {
				t.Fatalf("found %v, want %s", res.Signatures, tt.want)
			}
		})
	}
}

type mem []byte

func (m mem) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m mem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func TestEmptyRule(t *testing.T) {
	const size = 16 << 20
	tests := []struct {
		name  string
		off   int64 // where one non-zero byte goes; -1 none
		empty bool
	}{
		{"all zero", -1, true},
		{"data in the middle", 8 << 20, true},
		{"byte at 0", 0, false},
		{"byte just inside the first MiB", 1<<20 - 1, false},
		{"byte just past the first MiB", 1 << 20, true},
		{"byte in the last MiB", size - 1<<20, false},
		{"last byte", size - 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make(mem, size)
			if tt.off >= 0 {
				b[tt.off] = 0x42
			}
			res, err := CheckEmpty(b, size)
			if res.Empty() != tt.empty || (err == nil) != tt.empty {
				t.Fatalf("empty=%v err=%v, want empty=%v", res.Empty(), err, tt.empty)
			}
			if err != nil {
				if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), "non-zero data at offset") || res.NonZeroAt != tt.off {
					t.Errorf("error %v (at %d)", err, res.NonZeroAt)
				}
			}
		})
	}
	// tiny partitions do not panic
	for _, n := range []int64{0, 1, 4096} {
		if _, err := Probe(make(mem, n), n); err != nil {
			t.Errorf("size %d: %v", n, err)
		}
	}
}

func TestWipe(t *testing.T) {
	p := luks2test.NewImage(t, testSize)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", p).CombinedOutput(); err != nil {
		testenv.Missing(t, "mkfs.ext4: %v %s", err, out)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if res, _ := CheckEmpty(f, testSize); res.Empty() {
		t.Fatal("ext4 counted as empty")
	}
	if err := Wipe(f, testSize); err != nil {
		t.Fatal(err)
	}
	if res, err := CheckEmpty(f, testSize); err != nil {
		t.Fatalf("after wipe: %v", err)
	} else if !res.Empty() {
		t.Fatal("not empty after wipe")
	}
}

func FuzzProbe(f *testing.F) {
	f.Add([]byte("XFSB"), int64(0))
	f.Add([]byte("SKUL\xba\xbe"), int64(16<<10))
	f.Add([]byte{0xfc, 0x4e, 0x2b, 0xa9}, int64(4096))
	f.Fuzz(func(t *testing.T, data []byte, off int64) {
		const size = 2 << 20
		if off < 0 || off > size-int64(len(data)) {
			return
		}
		b := make(mem, size)
		copy(b[off:], data)
		res, err := Probe(b, size)
		if err != nil {
			t.Fatal(err)
		}
		// anything non-zero written where the empty rule looks is not empty
		nonzero := firstNonZero(data) >= 0
		if res.Empty() && nonzero && (off < ZeroCheckSize || off+int64(len(data)) > size-ZeroCheckSize) {
			t.Fatalf("non-zero bytes at %d counted as empty", off)
		}
	})
}
