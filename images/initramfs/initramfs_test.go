package initramfs

import (
	"bytes"
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
func debianKernel(t *testing.T) (out, release, dir string) {
	t.Helper()
	out = os.Getenv("CRYPTINIT_OUT")
	if out == "" {
		out = filepath.Join("..", "..", "out")
	}
	b, err := os.ReadFile(filepath.Join(out, "kernel.version"))
	if err != nil {
		testenv.MissingForVM(t, "no cached Debian kernel (make image OUT=...; CRYPTINIT_OUT=...): %v", err)
	}
	release = strings.TrimSpace(string(b))
	return out, release, filepath.Join(out, "kernel", "lib", "modules", release)
}

// TestVMHostHarness: --host on the harness VM (its captured sysfs) ships
// exactly the modules of the hand-written list it replaces.
func TestVMHostHarness(t *testing.T) {
	_, _, dir := debianKernel(t)
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

// Budgets: the compressed initramfs of the harness (virtio) image and of
// the --universal image, for the cached Debian kernel.
const (
	VirtioBudgetXZ      = 6_000_000
	UniversalBudgetZstd = 16_000_000
)

// universalRequired are drivers the hardware-matrix VM tests boot with.
var universalRequired = []string{"nvme", "ahci", "sd_mod", "virtio_scsi", "usb_storage", "uas",
	"xhci_pci", "xhci_hcd", "usbhid", "hid_generic", "e1000e"}

func buildDebian(t *testing.T, classes []Class, compress string) *Image {
	t.Helper()
	out, release, dir := debianKernel(t)
	init := filepath.Join(out, "bin", "cryptinit")
	if _, err := os.Stat(init); err != nil {
		testenv.MissingForVM(t, "no cryptinit binary (make image): %v", err)
	}
	img, err := Build(Options{KernelVersion: release, ModulesDir: dir, Init: init, Classes: classes, Compress: compress})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	Report(&b, img, compress)
	t.Log("\n" + b.String())
	return img
}

// TestVMImageBudgets builds the virtio-only image (xz) and the --universal
// one (zstd) from the cached Debian kernel and holds them to their budgets.
func TestVMImageBudgets(t *testing.T) {
	testenv.NeedTool(t, "xz", "apt-get install xz-utils")
	virtio := buildDebian(t, append(append([]Class{}, Base...), Virtio), "xz")
	t.Logf("virtio image: %d modules, %.2f MB raw, %.2f MB xz (budget %.2f MB)",
		len(virtio.Selection.Modules.Modules), float64(virtio.Raw)/1e6, float64(len(virtio.Data))/1e6, VirtioBudgetXZ/1e6)
	if len(virtio.Data) > VirtioBudgetXZ {
		t.Errorf("virtio initramfs is %d bytes xz, over its %d byte budget", len(virtio.Data), VirtioBudgetXZ)
	}
	universal := buildDebian(t, append(append([]Class{}, Base...), Universal...), "zstd")
	t.Logf("universal image: %d modules, %.2f MB raw, %.2f MB zstd (budget %.2f MB)",
		len(universal.Selection.Modules.Modules), float64(universal.Raw)/1e6, float64(len(universal.Data))/1e6, UniversalBudgetZstd/1e6)
	if len(universal.Data) > UniversalBudgetZstd {
		t.Errorf("universal initramfs is %d bytes zstd, over its %d byte budget", len(universal.Data), UniversalBudgetZstd)
	}
	for _, m := range universalRequired {
		if _, ok := universal.Selection.Modules.Paths[m]; !ok {
			t.Errorf("universal image lacks %s", m)
		}
	}
	for _, c := range universal.Selection.Classes {
		if len(c.Missing) > 0 {
			t.Errorf("class %s names modules Debian's kernel lacks: %v", c.Name, c.Missing)
		}
	}
}

// TestVMUniversalReproducible builds the universal image twice from the
// Debian kernel and compares the bytes.
func TestVMUniversalReproducible(t *testing.T) {
	classes := append(append([]Class{}, Base...), Universal...)
	a := buildDebian(t, classes, "zstd")
	b := buildDebian(t, classes, "zstd")
	if !bytes.Equal(a.Data, b.Data) {
		t.Errorf("two universal builds differ: %d and %d bytes", len(a.Data), len(b.Data))
	}
}

// TestVMHostMatrix: --host on a VM with the hardware-matrix devices (NVMe,
// SATA on AHCI, USB keyboard and disk on xHCI, an e1000e NIC; its captured
// sysfs) finds each one's driver, and --universal covers all of them.
func TestVMHostMatrix(t *testing.T) {
	_, _, dir := debianKernel(t)
	l, err := modules.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/matrix-vm.devices")
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
	want := map[string][]string{
		"storage": {"nvme", "ahci", "sd_mod", "usb_storage", "xhci_pci"},
		"input":   {"xhci_pci", "usbhid", "hid_generic"},
		"network": {"e1000e"},
	}
	for class, mods := range want {
		for _, m := range mods {
			found := false
			for _, h := range host[class] {
				found = found || h == m
			}
			if !found {
				t.Errorf("host class %s = %v, want %s in it", class, host[class], m)
			}
		}
	}
	universal := Select(l, append(append([]Class{}, Base...), Universal...), nil).Modules.Paths
	for _, m := range Select(l, HostClasses(host), nil).Modules.Modules {
		if _, ok := universal[m]; !ok {
			t.Errorf("--host ships %s, which --universal lacks", m)
		}
	}
}
