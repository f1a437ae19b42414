package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpmutil"
)

// TestLatchSequence seals the way the boot enrolls (STATE bound to PCR 15
// at zero, EPHEMERAL to PCR 15 after STATE's latch), then replays boots on
// the simulator: the genuine order unseals both; a different STATE volume
// key latched first (a planted or swapped STATE) makes EPHEMERAL's unseal
// fail with ErrLatchMismatch; STATE cannot be unsealed again after its own
// latch; a changed PCR 7 is named as PCR 7 alone.
func TestLatchSequence(t *testing.T) {
	ctx := context.Background()
	stateKey, plantedKey := []byte("STATE volume key"), []byte("planted STATE volume key")
	stateSecret, ephSecret := secret32(), bytes.Repeat([]byte{0xee}, 32)

	// first boot: enroll at each volume's place in the sequence
	sim := openRebootableSimulator(t)
	key, _ := signingKeys(t)
	bootTo(t, sim, "sb", "uki")
	s := NewSealer(sim, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sim, key)})
	stateSealed, err := s.Seal(ctx, stateSecret, []int{SecureBootPCR, LatchPCR})
	if err != nil {
		t.Fatal(err)
	}
	if err := LatchVolumeKey(sim, "STATE", stateKey, nil); err != nil {
		t.Fatal(err)
	}
	ephSealed, err := s.Seal(ctx, ephSecret, []int{SecureBootPCR, LatchPCR})
	if err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, 32)
	if i := slices.Index(stateSealed.PCRs, LatchPCR); i < 0 || !bytes.Equal(stateSealed.PCRValues[i], zero) {
		t.Fatalf("STATE sealed to PCRs %v values %x, want PCR 15 at zero", stateSealed.PCRs, stateSealed.PCRValues)
	}

	// a new boot on the same TPM: PCRs back to their initial values, the
	// owner seed (and so the SRK) kept
	reboot := func(t *testing.T) *Sealer {
		t.Helper()
		if err := sim.sim.Reset(); err != nil {
			t.Fatalf("reboot the simulator: %v", err)
		}
		bootTo(t, sim, "sb", "uki")
		return NewSealer(sim, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sim, key)})
	}
	unseal := func(t *testing.T, s *Sealer, sealed *Sealed, want []byte) error {
		t.Helper()
		got, err := s.Unseal(ctx, sealed)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("unsealed %x, want %x", got, want)
		}
		return err
	}

	t.Run("genuine order", func(t *testing.T) {
		s := reboot(t)
		if err := unseal(t, s, stateSealed, stateSecret); err != nil {
			t.Fatalf("STATE: %v", err)
		}
		if err := LatchVolumeKey(sim, "STATE", stateKey, nil); err != nil {
			t.Fatal(err)
		}
		if err := unseal(t, s, stateSealed, stateSecret); !errors.Is(err, ErrLatchMismatch) {
			t.Errorf("STATE again after its latch: err = %v, want ErrLatchMismatch", err)
		}
		if err := unseal(t, s, ephSealed, ephSecret); err != nil {
			t.Fatalf("EPHEMERAL after STATE's latch: %v", err)
		}
		if err := LatchVolumeKey(sim, "EPHEMERAL", []byte("EPHEMERAL volume key"), nil); err != nil {
			t.Fatal(err)
		}
		if err := unseal(t, s, ephSealed, ephSecret); !errors.Is(err, ErrLatchMismatch) {
			t.Errorf("EPHEMERAL again after its latch: err = %v, want ErrLatchMismatch", err)
		}
	})
	t.Run("planted STATE latched first", func(t *testing.T) {
		s := reboot(t)
		if err := LatchVolumeKey(sim, "STATE", plantedKey, nil); err != nil {
			t.Fatal(err)
		}
		err := unseal(t, s, ephSealed, ephSecret)
		if !errors.Is(err, ErrLatchMismatch) || !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("EPHEMERAL after a planted STATE: err = %v, want ErrLatchMismatch", err)
		}
		t.Logf("planted STATE: %v", err)
	})
	t.Run("EPHEMERAL before STATE", func(t *testing.T) {
		s := reboot(t)
		if err := unseal(t, s, ephSealed, ephSecret); !errors.Is(err, ErrLatchMismatch) {
			t.Fatalf("EPHEMERAL before STATE's latch: err = %v, want ErrLatchMismatch", err)
		}
	})
	t.Run("PCR 7 changed is named", func(t *testing.T) {
		s := reboot(t)
		d := sha256.Sum256([]byte("dbx update"))
		if err := ExtendPCR(sim, SecureBootPCR, d[:]); err != nil {
			t.Fatal(err)
		}
		err := unseal(t, s, stateSealed, stateSecret)
		var changed *PCRChangedError
		if !errors.As(err, &changed) || !slices.Equal(changed.Changed, []int{SecureBootPCR}) || errors.Is(err, ErrLatchMismatch) {
			t.Fatalf("err = %v, want PCR 7 named as the one changed", err)
		}
		// values in the token that do not reproduce the object's policy
		// are not believed
		forged := *stateSealed
		forged.PCRValues = [][]byte{zero, zero}
		err = unseal(t, s, &forged, stateSecret)
		if !errors.Is(err, ErrPCRMismatch) || errors.As(err, &changed) {
			t.Fatalf("forged PCR values: err = %v, want an unnamed ErrPCRMismatch", err)
		}
	})
}

// rebootableSimulator is the go-tpm-tools simulator with its Reset (a host
// reboot: PCRs reset, seeds kept) reachable.
type rebootableSimulator struct{ sim *simulator.Simulator }

func (r *rebootableSimulator) Send(cmd []byte) ([]byte, error) {
	return tpmutil.RunCommandRaw(r.sim, cmd)
}

func openRebootableSimulator(t *testing.T) *rebootableSimulator {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	return &rebootableSimulator{sim: sim}
}
