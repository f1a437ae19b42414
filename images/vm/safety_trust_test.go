package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/meta"
)

// attackerTag9 is what someone holding the disk writes into META tag 9 (in
// Talos's JSON): STATE's own nodeID key in slot 0, so that the node still
// opens STATE, plus a static key of their own in slot 5.
const attackerTag9 = `{"EncryptionProvider":"luks2","EncryptionKeys":[` +
	`{"KeySlot":0,"KeyNodeID":{}},{"KeySlot":5,"KeyStatic":{"KeyData":"attacker-passphrase"}}]}`

// TestVMTag9DoesNotEnroll is issue 10 defect 10: boot 1 formats STATE with
// the image's config (nodeID in slot 0) and writes META tag 9. On the host,
// tag 9 gets an extra static key. Boot 2 has no machine config: STATE opens
// from tag 9 with its nodeID key, and the console says that the static slot
// was not added because tag 9 is not authenticated. Afterwards, on the host,
// cryptsetup luksDump shows STATE's keyslots unchanged and the attacker's
// passphrase does not open STATE.
func TestVMTag9DoesNotEnroll(t *testing.T) {
	a := RequireInit(t)
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Fatalf("cryptsetup is needed on the host to check STATE's keyslots: %v", err)
	}
	t.Parallel()
	n := NewNode(t, a, "tag9", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: TestConfig(t, "basic.yaml"), Cmdline: fastFail})
	mustMount(t, r, "/system/state", "luks2-STATE")
	before, err := n.Disks[0].LUKSKeyslots("STATE")
	if err != nil || len(before) != 1 || before[0] != 0 {
		t.Fatalf("STATE keyslots after the first boot: %v %v", before, err)
	}

	err = n.Disks[0].EditPartition("META", func(file string) error {
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		m, err := meta.Read(f)
		if err != nil {
			return err
		}
		m.Set(meta.TagStateEncryptionConfig, []byte(attackerTag9))
		return m.Write(f)
	})
	if err != nil {
		t.Fatal(err)
	}

	vm := n.Boot(BootOptions{Cmdline: fastFail}) // no machine config at all
	vm.ExpectLine(`meta: STATE encryption config from META`)
	vm.ExpectLine(`STATE: key slots: skipped: add slot 5 \(static\).*` +
		regexp.QuoteMeta("config from META tag 9 is not authenticated: slot changes need a machine config in the signed image"))
	r = vm.RootReport()
	mustMount(t, r, "/system/state", "luks2-STATE")
	mustMarker(t, r, "/system/state", 1)
	if strings.Contains(vm.Console.Text(), "attacker-passphrase") {
		t.Error("the planted passphrase was logged")
	}

	// on the host, with cryptsetup: no slot 5, and the passphrase opens nothing
	img := filepath.Join(t.TempDir(), "state.img")
	state := make([]byte, 100*MiB)
	if err := n.Disks[0].ReadAt("STATE", state, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, state, 0o600); err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command("cryptsetup", "luksDump", img).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksDump: %v\n%s", err, dump)
	}
	slots := regexp.MustCompile(`(?m)^\s+(\d+): luks2$`).FindAllStringSubmatch(string(dump), -1)
	if len(slots) != 1 || slots[0][1] != "0" {
		t.Errorf("STATE keyslots per cryptsetup: %v, want only 0\n%s", slots, dump)
	}
	test := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file=-", img)
	test.Stdin = bytes.NewReader([]byte("attacker-passphrase"))
	if out, err := test.CombinedOutput(); err == nil {
		t.Errorf("the attacker's passphrase opens STATE: %s", out)
	}
}
