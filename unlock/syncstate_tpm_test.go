package unlock

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
)

// countingTPM counts unseals.
type countingTPM struct {
	fakeTPM
	unseals atomic.Int32
}

func (c *countingTPM) Unseal(ctx context.Context, s *tpm.Sealed) ([]byte, error) {
	c.unseals.Add(1)
	return c.fakeTPM.Unseal(ctx, s)
}

// TestFingerprintDoesNotUnsealOtherTPMSlots: a volume opened by its static
// key (slot 0) is not asked to unseal its tpm slot (slot 1) for the sync
// fingerprint, boot after boot.
func TestFingerprintDoesNotUnsealOtherTPMSlots(t *testing.T) {
	ctx := context.Background()
	dev := image(t, imageSize)
	vol := volume(t, "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"+
		"    - {slot: 0, static: {passphrase: first}}\n"+
		"    - {slot: 1, tpm: {}}\n"+smallKDF, "EPHEMERAL")
	chip := &countingTPM{}
	e := &Engine{Env: keys.Env{TPM: chip}}
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil || !r.Formatted {
		t.Fatalf("format: %v %+v", err, r)
	}
	r.Zero()
	for boot := 2; boot <= 3; boot++ {
		chip.unseals.Store(0)
		r, err = e.Unlock(ctx, vol, dev, imageSize)
		if err != nil {
			t.Fatal(err)
		}
		r.Zero()
		if r.Slot != 0 {
			t.Fatalf("boot %d opened with slot %d, want the static slot 0", boot, r.Slot)
		}
		if chip.unseals.Load() != 0 {
			t.Errorf("boot %d: the tpm slot that did not open the volume was unsealed %d times", boot, chip.unseals.Load())
		}
	}
}
