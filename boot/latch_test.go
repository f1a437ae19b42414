package boot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpmutil"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// eventLog records unlocks, latches and mounts in the order they happen.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) index(e string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Index(l.events, e)
}

type loggingUnlocker struct{ log *eventLog }

func (u loggingUnlocker) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	u.log.add("unlock:" + vol.ID)
	// opened by a key of another kind than tpm: latched all the same
	return &unlock.Result{VolumeID: vol.ID, UUID: "u", VolumeKey: bytes.Repeat([]byte(vol.ID[:1]), 64), Kind: "nodeID", Formatted: true,
		Mapping: luks2.Mapping{Cipher: "aes-xts-plain64", KeySize: 64, Offset: 16 << 20, Dynamic: true, SectorSize: 512}}, nil
}

type loggingMeasurer struct{ log *eventLog }

func (m loggingMeasurer) MeasurePhase(p string) error { return nil }
func (m loggingMeasurer) LatchVolumeKey(id string, key []byte) error {
	m.log.add("latch:" + id)
	return nil
}

type loggingMounter struct {
	*node
	log *eventLog
}

func (m loggingMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	if i := strings.LastIndex(source, "luks2-"); i >= 0 {
		m.log.add("mount:" + source[i+len("luks2-"):])
	}
	return m.node.Mount(source, target, fstype, flags, data)
}

// TestLatchOrder: every encrypted volume is latched, whichever key opened
// it; STATE before it is mounted (so before its salt and config copy are
// read) and before any later volume's keys are used;
// every other volume is latched after all later volumes' keys were used
// and before it is mounted. With one CPU and with two (u-data unlocking
// alongside STATE).
func TestLatchOrder(t *testing.T) {
	for _, cpus := range []int{1, 2} {
		log := &eventLog{}
		n := newNode(t, standardParts())
		b := n.boot(t.TempDir(), basicConfig, "")
		b.CPUs = cpus
		b.Measurer = loggingMeasurer{log}
		b.Mounter = loggingMounter{n, log}
		b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return loggingUnlocker{log} }
		if _, err := b.Run(context.Background()); err != nil {
			t.Fatalf("%d CPUs: %v\n%s", cpus, err, n.con.String())
		}
		t.Logf("%d CPUs: %s", cpus, strings.Join(log.events, " "))
		before := func(a, b string) {
			t.Helper()
			ia, ib := log.index(a), log.index(b)
			if ia < 0 || ib < 0 || ia > ib {
				t.Errorf("%d CPUs: want %s before %s: %v", cpus, a, b, log.events)
			}
		}
		later := []string{"EPHEMERAL", "u-data"}
		before("latch:STATE", "mount:STATE")
		for _, v := range later {
			if v == "EPHEMERAL" { // u-data may unlock alongside STATE: its keys need no latch
				before("latch:STATE", "unlock:"+v)
			}
			before("latch:"+v, "mount:"+v)
			for _, w := range later {
				before("unlock:"+w, "latch:"+v)
			}
		}
	}
}

// rebootableTPM is the TPM simulator with a host reboot (PCRs reset, seeds
// kept).
type rebootableTPM struct{ sim *simulator.Simulator }

func (r *rebootableTPM) Send(cmd []byte) ([]byte, error) { return tpmutil.RunCommandRaw(r.sim, cmd) }

type secureBootOn struct{}

func (secureBootOn) SecureBootEnabled(context.Context) (bool, error) { return true, nil }

// TestPlantedStateStopsTPMUnseal boots, with the real engine and the TPM
// simulator, a node whose STATE and EPHEMERAL have tpm keys only. The first
// boot formats both; after a reboot the genuine sequence unseals both;
// after STATE is swapped for an empty partition (formatted again: another
// volume key, another latch), EPHEMERAL's key no longer unseals, and
// EPHEMERAL is left as it was.
func TestPlantedStateStopsTPMUnseal(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	chip := &rebootableTPM{sim: sim}
	signer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Join([]string{
		volumeDoc("VolumeConfig", "STATE", "    - tpm: {}\n      slot: 0\n"),
		volumeDoc("VolumeConfig", "EPHEMERAL", "    - tpm: {}\n      slot: 0\n"),
	}, "---\n")
	parts := standardParts()
	delete(parts, "u-data")
	n := newNode(t, parts)

	// powerOn resets the TPM, measures firmware and UKI, and returns the
	// PCR signature of the initrd phase the boot is about to measure.
	powerOn := func(t *testing.T) tpm.Signatures {
		t.Helper()
		if err := sim.Reset(); err != nil {
			t.Fatal(err)
		}
		for pcr, ev := range map[int]string{tpm.SecureBootPCR: "secureboot-on", tpm.UKIPCR: ".linux kernel"} {
			d := sha256.Sum256([]byte(ev))
			if err := tpm.ExtendPCR(chip, pcr, d[:]); err != nil {
				t.Fatal(err)
			}
		}
		v, err := tpm.ReadPCRs(chip, []int{tpm.UKIPCR})
		if err != nil {
			t.Fatal(err)
		}
		inInitrd := tpm.ExtendDigest(v[0], tpm.PhaseDigest(tpm.PhaseEnterInitrd))
		sig, err := tpm.SignPolicy(signer, []int{tpm.UKIPCR}, [][]byte{inInitrd})
		if err != nil {
			t.Fatal(err)
		}
		return tpm.Signatures{"sha256": {sig}}
	}
	run := func(t *testing.T) (*Result, error) {
		t.Helper()
		sigs := powerOn(t)
		b := n.boot(t.TempDir(), cfg, "")
		b.CPUs = 2
		b.Keys.TPM = tpm.NewSealer(chip, &tpm.StaticSource{Key: &signer.PublicKey, Sigs: sigs})
		b.Keys.SecureBoot = secureBootOn{}
		b.Measurer = tpmMeasurer{&tpm.Measurer{TPM: chip}}
		return b.Run(context.Background())
	}

	if _, err := run(t); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	if _, err := run(t); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	for _, v := range []string{"STATE", "EPHEMERAL"} {
		if !strings.Contains(n.con.String(), v+": opened with slot 0 (tpm)") {
			t.Fatalf("second boot: %s not opened by its tpm key:\n%s", v, n.con.String())
		}
	}

	// plant: STATE becomes an empty partition, which the boot formats
	if err := os.Truncate(n.parts["STATE"], 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(n.parts["STATE"], parts["STATE"]); err != nil {
		t.Fatal(err)
	}
	eph, err := os.ReadFile(n.parts["EPHEMERAL"])
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(t)
	var f *Fatal
	if !errors.As(err, &f) || f.Failure.Volume != "EPHEMERAL" ||
		!strings.Contains(n.con.String(), "slot 0 (tpm): key unavailable: tpm unseal: unseal: PCRs [15] differ from sealing time") {
		t.Fatalf("boot with a planted STATE: err = %v, want EPHEMERAL's tpm key refused for PCR 15\n%s", err, n.con.String())
	}
	if !strings.Contains(n.con.String(), "STATE: formatted") {
		t.Errorf("the planted STATE was not formatted (the test plants nothing):\n%s", n.con.String())
	}
	if got, _ := os.ReadFile(n.parts["EPHEMERAL"]); !bytes.Equal(got, eph) {
		t.Error("EPHEMERAL changed on disk in the boot with the planted STATE")
	}
}

// TestTPMVolumesWaitForState: a volume with a tpm key never unlocks
// alongside STATE (its key is sealed to PCR 15 after STATE's latch), one
// with only other keys does.
func TestTPMVolumesWaitForState(t *testing.T) {
	cfg, err := config.Parse([]byte(strings.Join([]string{
		volumeDoc("VolumeConfig", "STATE", "    - nodeID: {}\n      slot: 0\n"),
		volumeDoc("VolumeConfig", "EPHEMERAL", "    - tpm: {}\n      slot: 0\n    - nodeID: {}\n      slot: 1\n"),
		volumeDoc("UserVolumeConfig", "data", "    - nodeID: {}\n      slot: 0\n"),
	}, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	p := &plan{}
	for i := range cfg.Volumes {
		v := newVolume(cfg.Volumes[i].ID, &cfg.Volumes[i], devices.Block{})
		if v.ID == config.StateVolume {
			p.state = v
		} else {
			p.others = append(p.others, v)
		}
	}
	b := &Boot{CPUs: 2}
	early := b.earlyVolumes(&machineConfig{cfg: cfg}, p)
	if len(early) != 1 || early[0].ID != "u-data" {
		t.Errorf("early volumes %s, want u-data only", volumeNames(early))
	}
}

// TestLatchWhenTheBootFails: a volume waiting for the others when the boot
// fails (its context ends) is latched anyway before it gives up, so no key
// unseals after it.
func TestLatchWhenTheBootFails(t *testing.T) {
	log := &eventLog{}
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Measurer = loggingMeasurer{log}
	b.latchWait = newLatchOrder()
	v := newVolume("EPHEMERAL", nil, devices.Block{})
	other := newVolume("u-data", nil, devices.Block{})
	b.latchWait.expect([]*volume{v, other}) // u-data never gets past its keys
	b.latchWait.stateLatched()
	b.latchWait.allExpected()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.latchOpened(ctx, v, []byte("key")); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want the boot's cancellation", err)
	}
	if log.index("latch:EPHEMERAL") < 0 {
		t.Errorf("EPHEMERAL not latched when the boot failed: %v", log.events)
	}
}
