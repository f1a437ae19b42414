package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/tpm"
)

// TestVMDebugShellLocksVault (issue 10, defect 3): a boot where STATE opens
// with its tpm key and EPHEMERAL then fails, with cryptinit.debug=shell,
// first unmounts and unmaps STATE, extends PCR 11 with debug-shell and PCR
// 15, and zeroes the key copy, saying each on the console; only then does
// the shell start. In the shell, /dev/mapper holds only control, no dm
// device is left in sysfs, /proc/mounts has no volume, PCR 11 reads the
// UKI's enter-initrd value extended with debug-shell (no signed policy
// names it) and PCR 15 is no longer zero. The image has no ls: the shell
// lists /dev/mapper with echo's glob.
func TestVMDebugShellLocksVault(t *testing.T) {
	a := RequireInit(t)
	if a.PCRKey == "" {
		t.Fatal("the image build had no cryptctl pcr sign: the UKI carries no PCR 11 policy")
	}
	t.Parallel()
	parts := TalosLayout()
	parts[2].Fill = fillLUKS(t, "only-the-operator-knows") // no configured key opens it
	n := NewNode(t, a, "shellvault", parts)
	n.TPM = true
	cfg := strings.SplitN(string(ProjectConfig(t, "tpm.yaml")), "---\n", 2)[0] + `---
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
encryption:
  provider: luks2
  keys:
    - static:
        passphrase: not-the-passphrase
      slot: 0
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
`

	vm := n.Boot(BootOptions{Firmware: SecureBoot, Config: []byte(cfg),
		Cmdline: "cryptinit.reboot-delay=300s cryptinit.prompt-timeout=0 cryptinit.debug=shell"})
	vm.ExpectLine(`STATE: formatted .* with slot 0 \(tpm`)
	vm.ExpectLine(`STATE: /dev/mapper/luks2-STATE \(xfs\) mounted`)
	vm.Expect(BootTimeout, `^`+PatFail+`EPHEMERAL: `)
	vm.ExpectLine(`debug shell: closing what the boot opened first`)
	vm.ExpectLine(`debug shell: unmounted STATE \(/cryptinit/mnt/STATE\)$`)
	vm.ExpectLine(`debug shell: unmapped luks2-STATE \(STATE\)$`)
	vm.ExpectLine(`debug shell: PCR 11 extended with debug-shell`)
	vm.ExpectLine(`debug shell: PCR 15 latched \(debug-shell\)`)
	vm.ExpectLine(`debug shell: no volume key kept`)
	vm.ExpectLine(`debug shell: /bin/sh on /dev/ttyS0`)
	vm.ExpectPrompt(`^cryptinit# $`)

	vm.Type(`echo "mapper:" /dev/mapper/*; echo "dm:" /sys/block/dm-*; ` +
		`while read -r l; do case "$l" in *luks2-*|*/cryptinit/mnt/*) echo "still-mounted: $l";; esac; done </proc/mounts; ` +
		`read -r p </sys/class/tpm/tpm0/pcr-sha256/11; echo "pcr11=$p"; ` +
		`read -r p </sys/class/tpm/tpm0/pcr-sha256/15; echo "pcr15=$p"` + "\n")
	vm.ExpectLine(`^mapper: /dev/mapper/control$`)
	vm.ExpectLine(`^dm: /sys/block/dm-\*$`) // the glob matched nothing
	pcr11 := vm.ExpectLine(`^(still-mounted: |pcr11=)`)
	if strings.HasPrefix(pcr11, "still-mounted") {
		t.Fatalf("a volume is still mounted in the shell: %s", pcr11)
	}
	pcr15 := vm.ExpectLine(`^pcr15=`)
	want11 := predictPCR11(t, bootUKI(n, 1), tpm.PhaseEnterInitrd, tpm.PhaseDebugShell)
	if got := strings.ToLower(strings.TrimPrefix(pcr11, "pcr11=")); got != hex.EncodeToString(want11) {
		t.Errorf("PCR 11 in the shell %s, want enter-initrd then debug-shell %x", got, want11)
	}
	if enter := predictPCR11(t, bootUKI(n, 1), tpm.PhaseEnterInitrd); strings.EqualFold(strings.TrimPrefix(pcr11, "pcr11="), hex.EncodeToString(enter)) {
		t.Error("PCR 11 still reads enter-initrd in the shell")
	}
	zero := hex.EncodeToString(make([]byte, sha256.Size))
	if got := strings.ToLower(strings.TrimPrefix(pcr15, "pcr15=")); len(got) != len(zero) || got == zero {
		t.Errorf("PCR 15 in the shell %q: want latched (not zero)", got)
	}
	vm.ExpectPrompt(`^cryptinit# $`)

	vm.Type("exit\n")
	vm.ExpectLine(`debug shell: exited \(status 0\)`)
	vm.Expect(10*time.Second, rebootLine.String())
	vm.Wait(60 * time.Second)
}
