package vm

import (
	"os"
	"path/filepath"
	"testing"
)

// pcr15Config gives STATE and EPHEMERAL a tpm key each, neither locked to
// STATE (so only PCR 15 can stop EPHEMERAL's key after STATE is swapped),
// with a nodeID fallback for STATE and a recovery passphrase for EPHEMERAL.
const pcr15Config = `apiVersion: v1alpha1
kind: VolumeConfig
name: STATE
encryption:
  provider: luks2
  keys:
    - tpm: {}
      slot: 0
    - nodeID: {}
      slot: 1
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
---
apiVersion: v1alpha1
kind: VolumeConfig
name: EPHEMERAL
encryption:
  provider: luks2
  keys:
    - tpm: {}
      slot: 0
    - static:
        passphrase: correct-horse-battery-staple
      slot: 31
      recovery: true
  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}
`

// TestVMPlantedStateTPM is issue 10 defect 4: a STATE planted in place of
// the node's own (here: an empty partition, which the boot formats with a
// new volume key) latches another value into PCR 15, so EPHEMERAL's tpm key
// no longer unseals (it opens only with its recovery passphrase); with the
// node's own STATE back, the tpm keys open both volumes again and
// EPHEMERAL's data is all there.
func TestVMPlantedStateTPM(t *testing.T) {
	_, n := tpmNode(t, "planted")
	boot := func() (*VM, *RootReport) {
		return n.BootToRoot(BootOptions{Firmware: SecureBoot, Config: []byte(pcr15Config), Cmdline: fastFail})
	}
	vm, _ := boot()
	mustSay(t, vm, `STATE: formatted .* with slot 0 \(tpm`)
	mustSay(t, vm, `EPHEMERAL: formatted .* with slot 0 \(tpm`)

	vm, r := boot()
	mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 0 \(tpm`)
	mustStateAndEphemeral(t, r, 1)

	// keep the node's own STATE, plant an empty one
	var size int64
	for _, p := range n.Disks[0].Partitions {
		if p.Label == "STATE" {
			size = p.Size
		}
	}
	own := make([]byte, size)
	if err := n.Disks[0].ReadAt("STATE", own, 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Disks[0].WipeAll("STATE"); err != nil {
		t.Fatal(err)
	}
	vm, r = boot()
	mustSay(t, vm, `STATE: formatted .* with slot 0 \(tpm`)
	mustSay(t, vm, `EPHEMERAL: +slot 0 \(tpm\).*PCRs \[15\] differ from sealing time`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 31 \(static`)
	mustMarker(t, r, "/var", 2)

	// the node's own STATE back: the tpm keys open both, nothing was lost
	if err := n.Disks[0].EditPartition("STATE", func(file string) error {
		return os.WriteFile(filepath.Clean(file), own, 0o600)
	}); err != nil {
		t.Fatal(err)
	}
	vm, r = boot()
	mustSay(t, vm, `STATE: opened with slot 0 \(tpm`)
	mustSay(t, vm, `EPHEMERAL: opened with slot 0 \(tpm`)
	mustMarker(t, r, "/system/state", 2)
	mustMarker(t, r, "/var", 3)
}
