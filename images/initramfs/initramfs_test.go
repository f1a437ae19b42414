package initramfs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/cryptinit/cryptinit/internal/testenv"
)

// handList is images/build.sh's module list before `cryptctl image build`
// replaced it: what the harness VM's image shipped, dependencies added.
var handList = []string{
	"virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "failover", "net_failover",
	"dm-mod", "dm-crypt", "xts", "ecb", "cryptd", "crypto_simd", "aesni-intel",
	"efivarfs", "xfs", "ext4", "libcrc32c", "crc32c_generic", "crc32c-intel", "crc16", "jbd2", "mbcache",
	"vfat", "fat", "nls_cp437", "nls_ascii",
}

// debianKernel is the kernel `make image` caches under $CRYPTINIT_OUT (or
// ./out): its release and module tree.
func debianKernel(t *testing.T) (release, dir string) {
	t.Helper()
	out := os.Getenv("CRYPTINIT_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "out")
	}
	b, err := os.ReadFile(filepath.Join(out, "kernel.version"))
	if err != nil {
		testenv.MissingForVM(t, "no cached Debian kernel (make image OUT=...; CRYPTINIT_OUT=...): %v", err)
	}
	release = strings.TrimSpace(string(b))
	return release, filepath.Join(out, "kernel", "lib", "modules", release)
}

// TestVMHostHarness: --host on the harness VM (its captured sysfs) ships
// exactly the modules of the hand-written list it replaces.
func TestVMHostHarness(t *testing.T) {
	_, dir := debianKernel(t)
	l, err := modules.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/harness-vm.devices")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devs, err := ParseDevices(f)
	if err != nil {
		t.Fatal(err)
	}
	host := HostModules(l, devs)
	t.Logf("host modules by class: %v", host)
	got := Select(l, append(append([]Class{}, Base...), HostClasses(host)...), nil).Modules.Modules
	want := l.Closure(handList).Modules
	if !reflect.DeepEqual(got, want) {
		t.Errorf("--host on the harness VM ships\n%v\nthe hand list shipped\n%v", got, want)
	}
	// The device drivers come from the devices, not from Base.
	for class, mod := range map[string]string{"storage": "virtio_blk", "network": "virtio_net", "crypto": "virtio_rng"} {
		found := false
		for _, m := range host[class] {
			found = found || m == mod
		}
		if !found {
			t.Errorf("host class %s = %v, want %s in it", class, host[class], mod)
		}
	}
}
