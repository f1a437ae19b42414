package vm

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DiskBus is how a node's data disks attach to the VM: each is a driver
// class the universal image must carry, and a device name the boot must
// find its partitions under (vda2, nvme0n1p2, sda2).
type DiskBus int

const (
	VirtioBlk  DiskBus = iota // virtio-blk-pci: vda (the default)
	NVMe                      // one nvme controller per disk: nvme0n1
	AHCI                      // SATA disks on an ahci controller: sda
	VirtioSCSI                // scsi-hd on virtio-scsi-pci: sda
	USBStorage                // usb-storage on qemu-xhci: sda, enumerated late
)

func (b DiskBus) String() string {
	return [...]string{"virtio-blk", "nvme", "ahci", "virtio-scsi", "usb-storage"}[b]
}

// controllers are the QEMU devices the bus needs once: the disk controller
// (when there are disks) and the xHCI controller for USB disks or keyboard.
func (b DiskBus) controllers(disks, usb bool) []string {
	var args []string
	if disks {
		switch b {
		case AHCI:
			args = append(args, "-device", "ahci,id=ahci0")
		case VirtioSCSI:
			args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
		case USBStorage:
			usb = true
		}
	}
	if usb {
		args = append(args, "-device", "qemu-xhci,id=xhci")
	}
	return args
}

// device is the -device value that attaches drive id as the i-th disk.
func (b DiskBus) device(id string, i int) string {
	switch b {
	case NVMe:
		return fmt.Sprintf("nvme,drive=%s,serial=cryptinit%d", id, i)
	case AHCI:
		return fmt.Sprintf("ide-hd,drive=%s,bus=ahci0.%d", id, i)
	case VirtioSCSI:
		return fmt.Sprintf("scsi-hd,drive=%s,bus=scsi0.0,channel=0,scsi-id=%d,lun=0", id, i)
	case USBStorage:
		return fmt.Sprintf("usb-storage,drive=%s,bus=xhci.0", id)
	default:
		return "virtio-blk-pci,drive=" + id
	}
}

// monitorSocket is a path for QEMU's monitor socket in dir, or in a short
// temporary directory (removed when the test ends) when dir's path is too
// long for a unix socket.
func monitorSocket(t TB, dir string) (string, error) {
	p := filepath.Join(dir, "monitor.sock")
	if len(p) < 100 {
		return p, nil
	}
	d, err := os.MkdirTemp("", "qmon")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "monitor.sock"), nil
}

// hmpKeys names the keys of QEMU's sendkey for the characters that are not
// a letter or digit; an upper-case letter is shift and the letter.
var hmpKeys = map[rune]string{
	' ': "spc", '-': "minus", '.': "dot", ',': "comma", '/': "slash",
	'=': "equal", '_': "shift-minus", '\n': "ret",
}

// KeyNames turns text into sendkey key names, one per character.
func KeyNames(text string) ([]string, error) {
	var keys []string
	for _, r := range text {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			keys = append(keys, string(r))
		case r >= 'A' && r <= 'Z':
			keys = append(keys, "shift-"+strings.ToLower(string(r)))
		case hmpKeys[r] != "":
			keys = append(keys, hmpKeys[r])
		default:
			return nil, fmt.Errorf("vm: no sendkey name for %q", r)
		}
	}
	return keys, nil
}

// SendKeys types text on the VM's USB keyboard with the monitor's sendkey
// (BootOptions.USBKeyboard), one key at a time, each acknowledged by the
// monitor before the next.
func (v *VM) SendKeys(text string) {
	v.t.Helper()
	if v.monitor == "" {
		v.t.Fatal("vm: SendKeys needs BootOptions.USBKeyboard")
	}
	keys, err := KeyNames(text)
	if err != nil {
		v.t.Fatal(err)
	}
	c, err := net.Dial("unix", v.monitor)
	if err != nil {
		v.t.Fatalf("vm: monitor: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	prompt := func() error {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var seen strings.Builder
		for !strings.HasSuffix(seen.String(), "(qemu) ") {
			b, err := r.ReadByte()
			if err != nil {
				return fmt.Errorf("vm: monitor: %w after %q", err, seen.String())
			}
			seen.WriteByte(b)
		}
		return nil
	}
	if err := prompt(); err != nil {
		v.t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := fmt.Fprintf(c, "sendkey %s\n", k); err != nil {
			v.t.Fatalf("vm: monitor: %v", err)
		}
		if err := prompt(); err != nil {
			v.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
