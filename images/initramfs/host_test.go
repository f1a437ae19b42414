package initramfs

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestReadHost reads a small sysfs tree: a virtio disk and a USB keyboard
// (class links into /sys/devices), the CPU, and an unrelated device.
func TestReadHost(t *testing.T) {
	sys := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(sys, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s+"\n"), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	link := func(class, name, target string) {
		t.Helper()
		d := filepath.Join(sys, "class", class)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(sys, target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", target), filepath.Join(d, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("devices/pci0000:00/0000:00:02.0/modalias", "pci:v00001AF4d00001001")
	write("devices/pci0000:00/0000:00:02.0/virtio1/modalias", "virtio:d00000002v00001AF4")
	link("block", "vda", "devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
	write("devices/pci0000:00/0000:00:14.0/modalias", "pci:v00008086d0000A36Dbc0Csc03i30")
	write("devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/modalias", "usb:v046DpC31Cic03isc01ip01")
	link("input", "input3", "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/input/input3")
	write("devices/system/cpu/modalias", "cpu:type:x86,ven0000fam0006mod003F:feature:,0099")
	write("devices/platform/pcspkr/modalias", "platform:pcspkr")
	devs, err := ReadHost(sys)
	if err != nil {
		t.Fatal(err)
	}
	byClass := map[string][]string{}
	for _, d := range devs {
		byClass[d.Class] = append(byClass[d.Class], d.Modalias)
	}
	want := map[string][]string{
		"block": {"virtio:d00000002v00001AF4", "pci:v00001AF4d00001001"},
		"input": {"usb:v046DpC31Cic03isc01ip01", "pci:v00008086d0000A36Dbc0Csc03i30"},
		"cpu":   {"cpu:type:x86,ven0000fam0006mod003F:feature:,0099"},
	}
	for class, w := range want {
		if !reflect.DeepEqual(byClass[class], w) {
			t.Errorf("class %s: %q, want %q", class, byClass[class], w)
		}
	}
	if len(byClass["device"]) != 6 {
		t.Errorf("device: %q, want every modalias under devices/ once", byClass["device"])
	}
}
