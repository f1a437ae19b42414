package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestSealUnsealRoundTrip(t *testing.T) {
	sim := openSimulator(t)
	key, _ := signingKeys(t)
	bootTo(t, sim, "secureboot-on", ".linux", "kernel")
	src := &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sim, key)}
	s := NewSealer(sim, src)
	ctx := context.Background()

	sealed, err := s.Seal(ctx, secret32(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sealed.PCRs; len(got) != 1 || got[0] != 7 {
		t.Errorf("PCRs = %v, want [7]", got)
	}
	if sealed.EncryptionVersion != "1" || sealed.Alg != "sha256" || len(sealed.PolicyHash) != 32 {
		t.Errorf("sealed metadata = %+v", sealed)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](sealed.Public)
	if err != nil {
		t.Fatal(err)
	}
	area, _ := pub.Contents()
	a := area.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.NoDA || a.UserWithAuth || area.Type != tpm2.TPMAlgKeyedHash {
		t.Errorf("sealed object attributes = %+v", a)
	}
	if !bytes.Equal(area.AuthPolicy.Buffer, sealed.PolicyHash) {
		t.Errorf("authPolicy %x != PolicyHash %x", area.AuthPolicy.Buffer, sealed.PolicyHash)
	}
	for i := 0; i < 2; i++ { // unsealing is repeatable until the latch
		got, err := s.Unseal(ctx, sealed)
		if err != nil {
			t.Fatalf("unseal %d: %v", i, err)
		}
		if !bytes.Equal(got, secret32()) {
			t.Fatalf("unseal %d = %x", i, got)
		}
	}
}

func TestUnsealFailures(t *testing.T) {
	sim := openSimulator(t)
	key, key2 := signingKeys(t)
	bootTo(t, sim, "secureboot-on", ".linux", "kernel")
	sigs := signCurrent(t, sim, key)
	src := &StaticSource{Key: &key.PublicKey, Sigs: sigs}
	s := NewSealer(sim, src)
	ctx := context.Background()
	sealed, err := s.Seal(ctx, secret32(), []int{7, 15})
	if err != nil {
		t.Fatal(err)
	}
	sealed7, err := s.Seal(ctx, secret32(), nil)
	if err != nil {
		t.Fatal(err)
	}

	// A new signature for a new PCR 11 value (a new UKI) unseals the same blob.
	t.Run("new UKI signature", func(t *testing.T) {
		d := sha256.Sum256([]byte("new initrd"))
		if err := ExtendPCR(sim, UKIPCR, d[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrNoSignature) {
			t.Fatalf("old signature on new PCR 11: err = %v, want ErrNoSignature", err)
		}
		src.Sigs = signCurrent(t, sim, key)
		got, err := s.Unseal(ctx, sealed)
		if err != nil || !bytes.Equal(got, secret32()) {
			t.Fatalf("unseal with new signature: %x, %v", got, err)
		}
	})
	t.Run("signature by another key", func(t *testing.T) {
		other := &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sim, key2)}
		if _, err := NewSealer(sim, other).Unseal(ctx, sealed); err == nil {
			t.Fatal("unseal with a signature by another key succeeded")
		}
		wrongKey := &StaticSource{Key: &key2.PublicKey, Sigs: signCurrent(t, sim, key2)}
		if _, err := NewSealer(sim, wrongKey).Unseal(ctx, sealed); !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("unseal with another signing key: err = %v, want ErrPCRMismatch (policy differs)", err)
		}
	})
	t.Run("different SRK", func(t *testing.T) {
		bad := *sealed
		bad.KeyName = tpm2.Marshal(tpm2.TPM2BName{Buffer: bytes.Repeat([]byte{1}, 34)})
		if _, err := s.Unseal(ctx, &bad); !errors.Is(err, ErrSRKMismatch) {
			t.Fatalf("err = %v, want ErrSRKMismatch", err)
		}
	})
	t.Run("PCR 15 latch", func(t *testing.T) {
		if err := LatchVolumeKey(sim, "STATE", []byte("volume key"), nil); err != nil {
			t.Fatal(err)
		}
		_, err := s.Unseal(ctx, sealed)
		if !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("unseal after latch: err = %v, want ErrPCRMismatch", err)
		}
		if !errors.Is(err, ErrLatchMismatch) {
			t.Fatalf("unseal after latch: err = %v, want ErrLatchMismatch (the token kept its PCR values)", err)
		}
		// A blob not bound to PCR 15 is unaffected.
		if got, err := s.Unseal(ctx, sealed7); err != nil || !bytes.Equal(got, secret32()) {
			t.Fatalf("unseal PCR 7 blob after latch: %x, %v", got, err)
		}
	})
	t.Run("wrong PCR 7", func(t *testing.T) {
		d := sha256.Sum256([]byte("secure boot changed"))
		if err := ExtendPCR(sim, SecureBootPCR, d[:]); err != nil {
			t.Fatal(err)
		}
		_, err := s.Unseal(ctx, sealed7)
		if !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("err = %v, want ErrPCRMismatch", err)
		}
		t.Logf("wrong PCR 7: %v", err)
	})
	t.Run("leave-initrd", func(t *testing.T) {
		if err := MeasurePhase(sim, PhaseLeaveInitrd, nil); err != nil {
			t.Fatal(err)
		}
		_, err := s.Unseal(ctx, sealed7)
		if !errors.Is(err, ErrNoSignature) {
			t.Fatalf("err = %v, want ErrNoSignature", err)
		}
		t.Logf("after leave-initrd: %v", err)
	})
}

// TestUnsealAfterLeaveInitrd checks the phase on its own: a blob that
// unseals in the initrd no longer does after leave-initrd.
func TestUnsealAfterLeaveInitrd(t *testing.T) {
	sim := openSimulator(t)
	s, sealed := sealInInitrd(t, sim)
	ctx := context.Background()
	if _, err := s.Unseal(ctx, sealed); err != nil {
		t.Fatalf("unseal in initrd: %v", err)
	}
	if err := MeasurePhase(sim, PhaseLeaveInitrd, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unseal after leave-initrd: err = %v, want ErrNoSignature", err)
	}
}

// TestClearedTPM: clearing the TPM changes the owner seed, so the SRK Name
// differs and Unseal says so.
func TestClearedTPM(t *testing.T) {
	sim := openSimulator(t)
	s, sealed := sealInInitrd(t, sim)
	ctx := context.Background()
	if _, err := (tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}).Execute(sim); err != nil {
		t.Fatalf("clear TPM: %v", err)
	}
	_, err := s.Unseal(ctx, sealed)
	if !errors.Is(err, ErrSRKMismatch) {
		t.Fatalf("err = %v, want ErrSRKMismatch", err)
	}
	t.Logf("cleared TPM: %v", err)
}

func TestSealRefusesUnmeasuredPCR(t *testing.T) {
	sim := openSimulator(t)
	key, _ := signingKeys(t)
	s := NewSealer(sim, &StaticSource{Key: &key.PublicKey})
	_, err := s.Seal(context.Background(), secret32(), nil) // PCR 7 never extended
	if !errors.Is(err, ErrPCRUnset) {
		t.Fatalf("err = %v, want ErrPCRUnset", err)
	}
}
