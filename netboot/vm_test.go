package netboot

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// TestVMNetbootKMS boots the image's kernel in QEMU with user-mode
// networking and a throwaway /init (testdata/vminit) that loads the virtio
// network modules, runs netboot.Up (DHCP from QEMU's slirp), and seals and
// unseals through the real kms-server on the host's loopback, reached from
// the guest as 10.0.2.2. A second boot with the node on the deny list must
// be refused. Needs CRYPTINIT_VM=1 and `make image` (for out/kernel).
func TestVMNetbootKMS(t *testing.T) {
	if os.Getenv("CRYPTINIT_VM") != "1" {
		t.Skip("VM test: set CRYPTINIT_VM=1 (make test-vm) to boot QEMU")
	}
	for _, tool := range []string{"qemu-system-x86_64", "cpio"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "needs %s", tool)
		}
	}
	out := os.Getenv("CRYPTINIT_OUT")
	if out == "" {
		out = "../out"
	}
	ver, err := os.ReadFile(filepath.Join(out, "kernel.version"))
	if err != nil {
		t.Fatalf("no kernel in %s (run make image): %v", out, err)
	}
	kdir := filepath.Join(out, "kernel")
	vmlinuz := filepath.Join(kdir, "boot", "vmlinuz-"+strings.TrimSpace(string(ver)))
	mods := filepath.Join(kdir, "lib", "modules", strings.TrimSpace(string(ver)), "kernel")

	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "modules"), 0o755)
	gobuild := func(pkg, dst string) {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dst, pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	gobuild("./netboot/testdata/vminit", filepath.Join(root, "init"))
	gobuild("./cmd/kms-server", filepath.Join(dir, "kms-server"))
	for _, m := range []string{"drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
		"drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci.ko", "net/core/failover.ko",
		"drivers/net/net_failover.ko", "drivers/net/virtio_net.ko"} {
		b, err := os.ReadFile(filepath.Join(mods, m))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, "modules", filepath.Base(m)), b, 0o644)
	}
	pki := filepath.Join(dir, "pki")
	if b, err := exec.Command(filepath.Join(dir, "kms-server"), "--generate-tls", pki, "--san", "10.0.2.2").CombinedOutput(); err != nil {
		t.Fatalf("generate-tls: %v\n%s", err, b)
	}
	ca, _ := os.ReadFile(filepath.Join(pki, "ca.pem"))
	os.WriteFile(filepath.Join(root, "ca.pem"), ca, 0o644)
	initrd := filepath.Join(dir, "initramfs.cpio")
	cpio := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	cpio.Dir = root
	if b, err := cpio.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, b)
	}

	// kms-server on the host loopback; QEMU's slirp maps the guest's
	// 10.0.2.2 to 127.0.0.1.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	port := addr[strings.LastIndex(addr, ":")+1:]
	deny := filepath.Join(dir, "deny")
	os.WriteFile(deny, nil, 0o644)
	audit := filepath.Join(dir, "audit.jsonl")
	srv := exec.Command(filepath.Join(dir, "kms-server"), "--listen", addr, "--http-listen", "",
		"--keyring", filepath.Join(dir, "keyring.json"), "--tls-cert", filepath.Join(pki, "server.pem"),
		"--tls-key", filepath.Join(pki, "server-key.pem"), "--deny-list", deny, "--deny-list-interval", "100ms",
		"--audit-log", audit)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })

	const node = "3f2a6b1c-8d4e-4f5a-9b6c-7d8e9f0a1b2c"
	boot := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35", "-m", "512", "-smp", "1", "-cpu", "max",
			"-nographic", "-no-reboot", "-kernel", vmlinuz, "-initrd", initrd,
			"-append", "console=ttyS0 quiet ip=dhcp panic=-1 kmstest.ep=https://10.0.2.2:"+port,
			"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0", "-uuid", node)
		b, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("QEMU timed out:\n%s", b)
		}
		if err != nil {
			t.Fatalf("QEMU: %v\n%s", err, b)
		}
		return string(b)
	}
	console := boot()
	if !strings.Contains(console, "KMSTEST-OK") || !strings.Contains(console, `"method":"dhcp","addr":"10.0.2.15/24"`) {
		t.Fatalf("guest did not unseal through the network:\n%s", console)
	}
	lines := 0
	f, _ := os.Open(audit)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"node_uuid":"`+node+`"`) && strings.Contains(sc.Text(), `"result":"OK"`) {
			lines++
		}
	}
	f.Close()
	if lines != 2 {
		t.Fatalf("audit log has %d OK lines for the node, want 2 (seal, unseal)", lines)
	}

	// Revoke the node: the next boot is refused with a clear reason.
	os.WriteFile(deny+".tmp", []byte(node+"\n"), 0o644)
	os.Rename(deny+".tmp", deny)
	time.Sleep(500 * time.Millisecond)
	console = boot()
	if !strings.Contains(console, "KMSTEST-FAIL") || !strings.Contains(console, "deny list") {
		t.Fatalf("revoked node was not refused:\n%s", console)
	}
}
