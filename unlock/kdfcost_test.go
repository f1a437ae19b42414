package unlock

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// TestCostlySlotSkipped: slot 0's argon2 needs more memory than the engine's
// limit (as a 2 GiB slot in a 1 GiB machine, scaled down so the test derives
// nothing big), so the engine skips it without deriving, says why, and opens
// with slot 1. Without the check slot 0 opens (and on a real machine the
// runtime dies of out of memory).
func TestCostlySlotSkipped(t *testing.T) {
	dev := image(t, imageSize)
	h, err := luks2.Format(dev, imageSize, []byte("pass-zero"),
		luks2.FormatOptions{KDF: luks2.KDF{Type: "argon2id", Time: 1, Memory: 8 << 10, Parallel: 1}})
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Unlock(dev, []byte("pass-zero"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.AddKeyslot(dev, vk, []byte("pass-one"), 1, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pass-zero", 1: "pass-one"}), "EPHEMERAL")
	before := digest(t, dev)

	e := &Engine{KDFLimits: luks2.KDFLimits{Memory: 4 << 20}}
	res, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatalf("unlock: %v", err)
	}
	defer res.Zero()
	if res.Slot != 1 || string(res.VolumeKey) != string(vk) {
		t.Fatalf("opened with slot %d, want 1 (slot 0 is too costly)", res.Slot)
	}
	if len(res.Attempts) < 2 || res.Attempts[0].Slot != 0 || !errors.Is(res.Attempts[0].Err, luks2.ErrKDFTooCostly) || !errors.Is(res.Attempts[0].Err, keys.ErrKeyUnavailable) {
		t.Fatalf("attempts %v: slot 0 not skipped for its cost", res.Attempts)
	}
	a := res.Attempts[0]
	for _, want := range []string{"keyslot 0", "8 MiB", "4 MiB available"} {
		if !strings.Contains(a.String(), want) {
			t.Errorf("slot 0's reason %q lacks %q", a, want)
		}
	}
	if a.KDFDuration != 0 {
		t.Errorf("slot 0's KDF ran for %s", a.KDFDuration)
	}
	// Sync could not check slot 0 and must leave it as it is.
	if digest(t, dev) != before {
		t.Errorf("the volume changed; sync: %v", res.Sync)
	}

	// Every slot too costly: no key opens, nothing derived, nothing written.
	e.KDFLimits = luks2.KDFLimits{Memory: 4 << 20, Time: 1}
	_, err = e.Unlock(ctx, vol, dev, imageSize)
	var oe *OpenError
	if !errors.As(err, &oe) || !errors.Is(err, ErrNoKeyOpens) || len(oe.Attempts) != 2 {
		t.Fatalf("all slots too costly: %v", err)
	}
	for _, a := range oe.Attempts {
		if !errors.Is(a.Err, luks2.ErrKDFTooCostly) {
			t.Errorf("%v: want ErrKDFTooCostly", a)
		}
	}
	if digest(t, dev) != before {
		t.Error("the volume changed when no slot could be tried")
	}
}

// costlyKDFConfig is a config whose new key slots get 64 MiB of argon2.
func costlyKDFConfig(slots map[int]string) string {
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"
	for s := 0; s < 32; s++ {
		if p, ok := slots[s]; ok {
			y += "    - static: {passphrase: " + p + "}\n      slot: " + itoa(s) + "\n"
		}
	}
	return y + "  kdf: {type: argon2id, memoryKiB: 65536, iterations: 1, parallelism: 1}\n"
}

// TestFormatRefusesCostlyConfigKDF: a config whose KDF for new key slots
// needs more memory than the machine has is refused before anything is
// written, instead of deriving it (which ends PID 1 out of memory).
func TestFormatRefusesCostlyConfigKDF(t *testing.T) {
	dev := image(t, imageSize)
	before := digest(t, dev)
	vol := volume(t, costlyKDFConfig(map[int]string{0: "pass-zero"}), "EPHEMERAL")
	e := &Engine{KDFLimits: luks2.KDFLimits{Memory: 16 << 20}}
	_, err := e.Unlock(ctx, vol, dev, imageSize)
	if !errors.Is(err, luks2.ErrKDFTooCostly) {
		t.Fatalf("format with a 64 MiB KDF on a 16 MiB machine: %v", err)
	}
	for _, want := range []string{"EPHEMERAL", "64 MiB", "16 MiB available", "nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if digest(t, dev) != before {
		t.Error("the partition changed")
	}
}

// TestSyncRefusesCostlyConfigKDF: sync leaves a slot it would add with a
// KDF the machine cannot afford, and says why.
func TestSyncRefusesCostlyConfigKDF(t *testing.T) {
	dev := image(t, imageSize)
	one := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pass-zero"}), "EPHEMERAL")
	res, err := (&Engine{}).Unlock(ctx, one, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	res.Zero()
	before := digest(t, dev)
	two := volume(t, costlyKDFConfig(map[int]string{0: "pass-zero", 1: "pass-one"}), "EPHEMERAL")
	e := &Engine{KDFLimits: luks2.KDFLimits{Memory: 16 << 20}}
	res, err = e.Unlock(ctx, two, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Zero()
	if res.Sync == nil || len(res.Sync.Problems) != 1 || !errors.Is(res.Sync.Problems[0], luks2.ErrKDFTooCostly) ||
		!strings.Contains(res.Sync.Problems[0].Error(), "slot 1") {
		t.Fatalf("sync: %v", res.Sync)
	}
	if digest(t, dev) != before || slices.Contains(slotsOf(t, dev), 1) {
		t.Errorf("slot 1 was written: slots %v", slotsOf(t, dev))
	}
}
