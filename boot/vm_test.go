package boot_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/images/vm"
)

// TestVMBootKMS boots cryptinit with configs/kms.yaml (STATE and EPHEMERAL
// sealed by a network KMS, EPHEMERAL also locked to STATE) against the real
// kms-server on the host: the first boot formats and seals, the second
// unseals; both bring the network up first and reach the real root. Needs
// CRYPTINIT_VM=1 and `make image`.
func TestVMBootKMS(t *testing.T) {
	a := vm.RequireInit(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "kms-server"), "./cmd/kms-server")
	build.Dir = ".."
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build kms-server: %v\n%s", err, b)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	port := addr[strings.LastIndex(addr, ":")+1:]
	srv := exec.Command(filepath.Join(dir, "kms-server"), "--listen", addr, "--http-listen", "", "--insecure-plaintext",
		"--keyring", filepath.Join(dir, "keyring.json"), "--audit-log", filepath.Join(dir, "audit.jsonl"))
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })

	// QEMU's user network maps the guest's 10.0.2.2 to the host loopback.
	cfg := strings.ReplaceAll(string(vm.ProjectConfig(t, "kms.yaml")), "10.0.2.2:4050", "10.0.2.2:"+port)
	n := vm.NewNode(t, a, "kms", vm.TalosLayout())
	for boot := 0; boot < 2; boot++ {
		v, r := n.BootToRoot(vm.BootOptions{Config: []byte(cfg), Cmdline: "cryptinit.reboot-delay=1s", Net: true})
		if err := r.Mounted("/system/state", "luks2-STATE"); err != nil {
			t.Error(err)
		}
		if err := r.Mounted("/var", "luks2-EPHEMERAL"); err != nil {
			t.Error(err)
		}
		text := v.Console.Text()
		if !strings.Contains(text, `"step":"network"`) || !strings.Contains(text, "(kms") {
			t.Errorf("boot %d: no network step or no kms key in the log", boot+1)
		}
	}
	audit, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if !strings.Contains(string(audit), "Unseal") && !strings.Contains(string(audit), "unseal") {
		t.Errorf("the KMS audit log shows no unseal:\n%s", audit)
	}
}
