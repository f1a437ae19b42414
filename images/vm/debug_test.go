package vm

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// rebootLine is the init's last word before it reboots.
var rebootLine = regexp.MustCompile(`(?m)^cryptinit: \+[0-9.]+s rebooting$`)

// fillLUKS formats the partition as LUKS2 on the host with cryptsetup (test
// KDF costs), opened by passphrase only: a volume whose configured keys do
// not open it, for a boot that must fail without any earlier boot.
func fillLUKS(t *testing.T, passphrase string) func(io.WriterAt, int64) error {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		testenv.Missing(t, "cryptsetup not installed (images/setup.sh installs cryptsetup-bin)")
	}
	return func(w io.WriterAt, size int64) error {
		img := filepath.Join(t.TempDir(), "luks.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(img, size); err != nil {
			return err
		}
		cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
			"--pbkdf", "argon2id", "--pbkdf-memory", "16384", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1",
			"--key-file", "-", img)
		cmd.Stdin = strings.NewReader(passphrase)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cryptsetup luksFormat: %w: %s", err, out)
		}
		return copySparse(w, img)
	}
}

// debugNode is a node whose EPHEMERAL opens with none of the keys of
// recovery-wrong.yaml, so every boot with that config fails on EPHEMERAL
// (the console prompt is off).
func debugNode(t *testing.T, a *Artifacts, name string) (*Node, []byte) {
	parts := TalosLayout()
	parts[2].Fill = fillLUKS(t, "only-the-operator-knows")
	n := NewNode(t, a, name, parts)
	cfg := strings.ReplaceAll(string(TestConfig(t, "recovery-wrong.yaml")), "WRONG_KEY", "not-the-passphrase")
	return n, []byte(cfg)
}

// TestVMDebugShell: with cryptinit.debug=shell, a failed boot starts Debian's
// dash (shipped as /bin/sh) on the serial console after the banner; the
// operator runs commands in it (on the console's own terminal, with the
// debug environment) and `exit` reboots the machine at once, whatever
// cryptinit.reboot-delay says (QEMU, -no-reboot, exits).
func TestVMDebugShell(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n, cfg := debugNode(t, a, "debugshell")
	// A reboot delay far beyond the wait below: leaving the shell must
	// reboot at once, not after the delay.
	vm := n.Boot(BootOptions{Config: cfg, Cmdline: "cryptinit.reboot-delay=300s cryptinit.prompt-timeout=0 cryptinit.debug=shell"})
	vm.Expect(BootTimeout, `^`+PatFail+`EPHEMERAL: `)
	vm.ExpectLine(`cryptinit\.debug=shell is set: starting a shell instead of rebooting`)
	vm.ExpectLine(`debug shell: /bin/sh on /dev/ttyS0`)
	vm.ExpectLine(`debug shell: +while read -r l; do echo "\$l"; done </proc/cmdline shows a file`)
	vm.ExpectLine(`debug shell: type exit or Ctrl-D to leave it: the machine then reboots`)
	vm.ExpectPrompt(`^cryptinit# $`)

	// Output no echo of the typed line can produce: the shell computes
	// 42, reads the kernel's own command line, and proves its terminal
	// is a controlling one (only then does /dev/tty open).
	// The image has no cat: the shell reads the file with its builtins, as
	// the init's hint says.
	vm.Type("echo dbg-$((6*7)); read -r c </proc/cmdline; echo \"cmdline=$c\"; echo path=$PATH; : </dev/tty && echo ctty-$((1+1))\n")
	vm.ExpectLine(`^dbg-42$`)
	cmdline := vm.ExpectLine(`^cmdline=console=ttyS0 `)
	if !strings.Contains(cmdline, "cryptinit.debug=shell") {
		t.Errorf("/proc/cmdline read in the shell lacks cryptinit.debug=shell: %q", cmdline)
	}
	vm.ExpectLine(`^path=/sbin:/bin:/usr/sbin:/usr/bin$`)
	vm.ExpectLine(`^ctty-2$`)
	vm.ExpectPrompt(`^cryptinit# $`)

	vm.Type("exit\n")
	vm.ExpectLine(`debug shell: exited \(status 0\)`)
	vm.Expect(10*time.Second, rebootLine.String())
	vm.Wait(60 * time.Second)
}

// TestVMNoDebugShellByDefault: the same failed boot without
// cryptinit.debug=shell never starts a shell: the banner says it reboots
// and QEMU exits (-no-reboot) with no shell prompt on the console.
func TestVMNoDebugShellByDefault(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n, cfg := debugNode(t, a, "noshell")
	vm := n.Boot(BootOptions{Config: cfg, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	vm.Expect(BootTimeout, `^`+PatFail+`EPHEMERAL: `)
	vm.ExpectLine(`rebooting in 1s \(boot with cryptinit\.debug=shell for a shell instead\)`)
	vm.Wait(BootTimeout)
	text := vm.Console.Text()
	for _, s := range []string{"debug shell:", "cryptinit# ", "starting a shell"} {
		if strings.Contains(text, s) {
			t.Errorf("console shows %q although cryptinit.debug=shell was not given", s)
		}
	}
	if !rebootLine.MatchString(text) {
		t.Errorf("no reboot line on the console:\n%s", vm.Console.Tail(20))
	}
}
