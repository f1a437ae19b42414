package vm

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// startKMS runs out/bin/kms-server on a free loopback port (QEMU's user network
// shows the host's loopback as 10.0.2.2) and returns the port and the deny
// list file it watches, and stop, which ends the server (also done at cleanup).
func startKMS(t *testing.T, a *Artifacts) (port int, denyList string, stop func()) {
	t.Helper()
	bin := filepath.Join(a.Dir, "bin", "kms-server")
	if _, err := os.Stat(bin); err != nil {
		testenv.Missing(t, "out/bin/kms-server is missing: cmd/kms-server did not build in make image")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	denyList = filepath.Join(dir, "deny")
	if err := os.WriteFile(denyList, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return port, denyList, serveKMS(t, bin, dir, port)
}

// serveKMS runs the kms-server bin on port with its keyring, deny list and
// logs in dir, waits until it listens, and returns stop. Started again on
// the same dir and port, it serves the keys it sealed before.
func serveKMS(t *testing.T, bin, dir string, port int) (stop func()) {
	t.Helper()
	denyList := filepath.Join(dir, "deny")
	cmd := exec.Command(bin, "-listen", fmt.Sprintf("127.0.0.1:%d", port), "-insecure-plaintext",
		"-keyring", filepath.Join(dir, "keyring.json"), "-http-listen", "",
		"-audit-log", filepath.Join(dir, "audit.log"), "-deny-list", denyList, "-deny-list-interval", "200ms")
	logf, err := os.OpenFile(filepath.Join(dir, "kms.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			logf.Close()
		})
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return stop
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "kms.log"))
			t.Fatalf("kms-server did not listen on %d: %s", port, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestVMKMS boots configs/kms.yaml with a virtio NIC on QEMU's user network
// and a kms-server on the host: the first boot brings the network up (a
// "network" step on the timeline) and seals both volume keys with the KMS,
// the second unseals them (the KMS audit log shows it), and once the
// node's UUID is on the KMS deny list the third boot cannot open STATE; with
// the server stopped, the fourth boot fails with a banner naming the endpoint.
func TestVMKMS(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	port, deny, stopKMS := startKMS(t, a)
	cfg := []byte(strings.ReplaceAll(string(ProjectConfig(t, "kms.yaml")), "10.0.2.2:4050", fmt.Sprintf("10.0.2.2:%d", port)))
	n := NewNode(t, a, "kms", TalosLayout())
	for boot := 0; boot < 2; boot++ {
		vm, r := n.BootToRoot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail})
		mustMount(t, r, "/system/state", "luks2-STATE")
		mustMount(t, r, "/var", "luks2-EPHEMERAL")
		mustMarker(t, r, "/var", boot)
		if text := vm.Console.Text(); !strings.Contains(text, `"step":"network"`) || !strings.Contains(text, "(kms") {
			t.Errorf("boot %d: no network step or no kms key in the log", boot+1)
		}
		if boot == 1 {
			mustSay(t, vm, `STATE: opened with slot 0 \(kms`)
		}
	}
	audit, _ := os.ReadFile(filepath.Join(filepath.Dir(deny), "audit.log"))
	if !strings.Contains(string(audit), "Unseal") && !strings.Contains(string(audit), "unseal") {
		t.Errorf("the KMS audit log shows no unseal:\n%s", audit)
	}
	if err := os.WriteFile(deny, []byte(n.UUID+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the server rereads the deny list every 200 ms
	vm := n.Boot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`STATE: `, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("a node on the KMS deny list booted to the real root")
	}
	_, reason := vm.Expect(30*time.Second, `slot 0 \(kms\): failed: .*deny list`)
	t.Logf("denied node: %s /%s", line, strings.TrimPrefix(strings.TrimSpace(reason), "cryptinit:"))
	vm.Wait(BootTimeout)

	// KMS down: the client retries within its bounds, then the banner names
	// the endpoint and the boot does not reach the real root.
	stopKMS()
	vm = n.Boot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	_, line = vm.Expect(BootTimeout, `^`+PatFail+`STATE: `, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("a node whose only STATE key is kms booted with the KMS down")
	}
	_, reason = vm.Expect(30*time.Second, fmt.Sprintf(`slot 0 \(kms\): .*10\.0\.2\.2:%d`, port))
	t.Logf("KMS down: %s /%s", line, strings.TrimPrefix(strings.TrimSpace(reason), "cryptinit:"))
	vm.Wait(BootTimeout)
}
