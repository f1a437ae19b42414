// Command vminit is a throwaway PID 1 for checking netboot and the KMS
// client in a QEMU guest with user-mode networking: it loads the virtio
// network modules, brings the network up from ip=, seals and unseals with
// the KMS at kmstest.ep= (the host's kms-server through 10.0.2.2), takes the
// network down and powers off. It prints KMSTEST-OK on success.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptinit/cryptinit/netboot"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

var modules = []string{"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "failover", "net_failover", "virtio_net"}

func main() {
	err := run()
	if err != nil {
		fmt.Println("KMSTEST-FAIL:", err)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	os.MkdirAll("/proc", 0o755)
	os.MkdirAll("/sys", 0o755)
	os.MkdirAll("/etc", 0o755)
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return err
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		return err
	}
	for _, m := range modules {
		f, err := os.Open("/modules/" + m + ".ko")
		if err != nil {
			return err
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			return fmt.Errorf("load %s: %w", m, err)
		}
		f.Close()
	}
	raw, _ := os.ReadFile("/proc/cmdline")
	cmdline := string(raw)
	var ep string
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "kmstest.ep="); ok {
			ep = v
		}
	}
	ips, err := netboot.ParseCmdline(cmdline)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	s, err := netboot.Up(ctx, netboot.Config{IP: ips, Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	if err != nil {
		return err
	}
	j, _ := json.Marshal(s.Record())
	fmt.Printf("RECORD %s\n", j)
	uuid, err := os.ReadFile("/sys/class/dmi/id/product_uuid")
	if err != nil {
		return err
	}
	node := strings.ToLower(strings.TrimSpace(string(uuid)))
	cas, err := kms.LoadCAs("/ca.pem")
	if err != nil {
		return err
	}
	cl := kms.New(kms.Options{RootCAs: cas, Attempts: 3, Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	key := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := cl.Seal(ctx, ep, node, key)
	if err != nil {
		return err
	}
	got, err := cl.Unseal(ctx, ep, node, sealed)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, key) {
		return fmt.Errorf("unsealed the wrong key")
	}
	fmt.Printf("node %s: sealed %d bytes and unsealed at %s in %v (network %v)\n", node, len(sealed), ep, time.Since(start), s.Record().Took)
	if err := s.Down(); err != nil {
		return err
	}
	fmt.Println("KMSTEST-OK")
	return nil
}
