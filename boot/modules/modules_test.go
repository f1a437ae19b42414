package modules

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeProber records the order of loads and fails the names in fail.
type fakeProber struct {
	mu     sync.Mutex
	loaded []string
	fail   map[string]bool
}

func (f *fakeProber) Probe(name, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[name] {
		return errors.New("no such device")
	}
	f.loaded = append(f.loaded, name)
	return nil
}

// writeTables makes a modules directory like the one in our initramfs.
func writeTables(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep": strings.Join([]string{
			"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko",
			"kernel/fs/jbd2/jbd2.ko:",
			"kernel/fs/mbcache.ko:",
			"kernel/lib/crc16.ko:",
			"kernel/crypto/crc32c_generic.ko:",
			"kernel/arch/x86/crypto/crc32c-intel.ko:",
			"kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko",
			"kernel/drivers/md/dm-mod.ko:",
			"kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko",
			"kernel/lib/libcrc32c.ko:",
			"",
		}, "\n"),
		"modules.softdep": "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\nsoftdep libcrc32c pre: crc32c\nsoftdep dm_crypt post: nonexistent-thing\n",
		"modules.alias":   "# Aliases extracted from modules themselves.\nalias crypto-crc32c-intel crc32c_intel\nalias crc32c-intel crc32c_intel\nalias crypto-crc32c crc32c_intel\nalias crypto-crc32c-generic crc32c_generic\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias devname:mapper/control dm_mod\nalias fs-ext[234] ext4\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"dm-crypt":          "dm_crypt",
		"crc32c_generic":    "crc32c_generic",
		"pci:v*d[0-9-]*":    "pci:v*d[0-9-]*",
		"a-b[x-y]c-d":       "a_b[x-y]c_d",
		"crypto-crc32c":     "crypto_crc32c",
		"devname:mapper/cn": "devname:mapper/cn",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/xfs/xfs.ko.xz":                "xfs",
		"kernel/arch/x86/crypto/crc32c-intel.ko": "crc32c-intel",
		" kernel/drivers/md/dm-mod.ko.zst ":      "dm-mod",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	l, err := Open(writeTables(t), &fakeProber{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]string{
		"dm-crypt":      {"dm_crypt"},
		"dm_crypt":      {"dm_crypt"},
		"crypto-crc32c": {"crc32c_intel", "crc32c_generic"},
		"crypto_crc32c": {"crc32c_intel", "crc32c_generic"},
		"fs-ext4":       {"ext4"},
		"fs-ext5":       nil,
		"missing":       nil,
		"crc32c-intel":  {"crc32c_intel"},
	} {
		if got := l.Resolve(name); !reflect.DeepEqual(got, want) {
			t.Errorf("Resolve(%q) = %q, want %q", name, got, want)
		}
	}
	if got := len(l.Shipped()); got != 10 {
		t.Errorf("Shipped() has %d modules, want 10: %q", got, l.Shipped())
	}
}

func TestSoftdepLoadsFirst(t *testing.T) {
	p := &fakeProber{fail: map[string]bool{"crc32c_intel": true}} // no SSE4.2
	l, err := Open(writeTables(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load("ext4"); err != nil {
		t.Fatal(err)
	}
	// ext4 pre: crypto-crc32c -> crc32c_intel fails, crc32c_generic loads,
	// then ext4's modules.dep dependencies, then ext4.
	want := []string{"crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"}
	if !reflect.DeepEqual(p.loaded, want) {
		t.Errorf("load order %q, want %q", p.loaded, want)
	}
	// Loading again does not probe again.
	if err := l.Load("ext4"); err != nil || len(p.loaded) != 5 {
		t.Errorf("second load: err %v, loaded %q", err, p.loaded)
	}
}

func TestAliasFailsWhenAllFail(t *testing.T) {
	p := &fakeProber{fail: map[string]bool{"crc32c_intel": true, "crc32c_generic": true}}
	l, _ := Open(writeTables(t), p)
	err := l.Load("crypto-crc32c")
	if err == nil || !strings.Contains(err.Error(), "crc32c_intel") || !strings.Contains(err.Error(), "crc32c_generic") {
		t.Fatalf("want an error naming both candidates, got %v", err)
	}
	if err := l.Load("nope"); !errors.Is(err, ErrNotShipped) {
		t.Fatalf("unknown module: %v", err)
	}
}

// TestSoftdepOfHardDependency is the xfs case: xfs needs libcrc32c
// (modules.dep), and libcrc32c needs a crc32c driver first (softdep); the
// driver must be loaded before libcrc32c even when only xfs is asked for.
func TestSoftdepOfHardDependency(t *testing.T) {
	p := &fakeProber{}
	l, _ := Open(writeTables(t), p)
	if err := l.Load("xfs"); err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "libcrc32c", "xfs"}
	if !reflect.DeepEqual(p.loaded, want) {
		t.Errorf("order %q, want %q", p.loaded, want)
	}
	// A failing dependency fails the module and says so.
	p2 := &fakeProber{fail: map[string]bool{"dm_mod": true}}
	l2, _ := Open(writeTables(t), p2)
	if err := l2.Load("dm_crypt"); err == nil || !strings.Contains(err.Error(), "dependency") || len(p2.loaded) != 0 {
		t.Errorf("got %v, loaded %q", err, p2.loaded)
	}
}

func TestPostSoftdepAndMissingPostIgnored(t *testing.T) {
	p := &fakeProber{}
	l, _ := Open(writeTables(t), p)
	if err := l.Load("dm-crypt"); err != nil {
		t.Fatalf("a missing post: softdep must not fail the module: %v", err)
	}
	if !reflect.DeepEqual(p.loaded, []string{"dm_mod", "dm_crypt"}) {
		t.Errorf("loaded %q", p.loaded)
	}
}

func TestLoadAllConcurrent(t *testing.T) {
	p := &fakeProber{fail: map[string]bool{"crc32c_intel": true}}
	l, _ := Open(writeTables(t), p)
	res := l.LoadAll(l.Shipped())
	var failed []string
	for _, r := range res {
		if r.Err != nil {
			failed = append(failed, r.Name)
		}
	}
	if !reflect.DeepEqual(failed, []string{"crc32c_intel"}) {
		t.Errorf("failed %q, want only crc32c_intel", failed)
	}
	// crc32c_generic is loaded before both ext4 and libcrc32c (their pre: softdeps).
	idx := map[string]int{}
	for i, m := range p.loaded {
		if _, dup := idx[m]; dup {
			t.Errorf("%s probed twice", m)
		}
		idx[m] = i
	}
	if idx["crc32c_generic"] > idx["ext4"] || idx["crc32c_generic"] > idx["libcrc32c"] {
		t.Errorf("soft dependency order broken: %q", p.loaded)
	}
}

func TestOpenNeedsModulesDep(t *testing.T) {
	if _, err := Open(t.TempDir(), &fakeProber{}); err == nil {
		t.Fatal("Open without modules.dep succeeded")
	}
}
