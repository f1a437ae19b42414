package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// stateStatic is a machine config with STATE opened by static keys, one per
// slot, with test KDF costs for any slot cryptinit makes.
func stateStatic(slots map[int]string) []byte {
	y := "apiVersion: v1alpha1\nkind: VolumeConfig\nname: STATE\nencryption:\n  provider: luks2\n  keys:\n"
	for s := 0; s < 32; s++ {
		if p, ok := slots[s]; ok {
			y += fmt.Sprintf("    - static:\n        passphrase: %s\n      slot: %d\n", p, s)
		}
	}
	return []byte(y + "  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}\n")
}

// TestVMCostlyKeyslotSkipped (issue 10, defect 11): STATE's slot 0 is an
// argon2id slot of 2 GiB, as cryptsetup makes it on a bigger machine, in a
// 1 GiB VM. Deriving it would end in "fatal error: runtime: out of memory"
// and a kernel panic; the boot skips it with a line naming the slot and the
// memory it needs against what the VM has, opens STATE with slot 1 (also in
// the config), leaves slot 0 as it is and reaches the real root.
func TestVMCostlyKeyslotSkipped(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	n := NewNode(t, a, "kdfcost", TalosLayout())
	_, r := n.BootToRoot(BootOptions{Config: stateStatic(map[int]string{1: "small-slot-pass"}), Cmdline: fastFail})
	mustMount(t, r, "/system/state", "luks2-STATE")

	// cryptsetup adds slot 0 on the host (24 GiB: it derives the 2 GiB once).
	err := n.Disks[0].EditPartition("STATE", func(file string) error {
		dir := t.TempDir()
		old, add := filepath.Join(dir, "old"), filepath.Join(dir, "new")
		os.WriteFile(old, []byte("small-slot-pass"), 0o600)
		os.WriteFile(add, []byte("big-slot-pass"), 0o600)
		out, err := exec.Command("cryptsetup", "luksAddKey", "--batch-mode", "--key-file", old, "--key-slot", "0",
			"--pbkdf", "argon2id", "--pbkdf-memory", "2097152", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "4",
			file, add).CombinedOutput()
		if err != nil {
			return fmt.Errorf("cryptsetup luksAddKey: %w: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := tokensAndSlots(luksHeader(t, n.Disks[0], "STATE"))
	if h := luksHeader(t, n.Disks[0], "STATE"); h.Keyslots[0].KDF.Memory != 2<<20 {
		t.Fatalf("slot 0's argon2 memory is %d KiB, want 2 GiB", h.Keyslots[0].KDF.Memory)
	}

	vm, r := n.BootToRoot(BootOptions{Config: stateStatic(map[int]string{0: "big-slot-pass", 1: "small-slot-pass"}),
		Cmdline: fastFail + " panic=1", MemoryMiB: 1024}) // a kernel panic ends the VM at once
	mustMount(t, r, "/system/state", "luks2-STATE")
	mustMarker(t, r, "/system/state", 1)
	mustSay(t, vm, `STATE: +slot 0 \(static\): keyslot 0: argon2id needs 2048 MiB of memory, [0-9]+ MiB available`)
	mustSay(t, vm, `STATE: opened with slot 1 \(static\)`)
	if after := tokensAndSlots(luksHeader(t, n.Disks[0], "STATE")); after != before {
		t.Errorf("STATE's key slots changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if h := luksHeader(t, n.Disks[0], "STATE"); h.Keyslots[0].KDF.Memory != 2<<20 {
		t.Errorf("slot 0 was rewritten (argon2 memory %d KiB)", h.Keyslots[0].KDF.Memory)
	}
}
