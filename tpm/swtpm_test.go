package tpm

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
)

// startSwtpm runs swtpm on loopback with a fresh state directory and returns
// a raw stream transport to its data port. It skips without swtpm.
func startSwtpm(tb testing.TB) transport.TPMCloser {
	tb.Helper()
	sw := swtpmtest.Start(tb, "")
	t := NewStreamTransport(sw.Conn)
	tb.Cleanup(func() { _ = t.Close() })
	return t
}

// transientHandles counts loaded transient objects and sessions, to catch
// leaks (swtpm has no resource manager).
func transientHandles(tb testing.TB, t transport.TPM) int {
	tb.Helper()
	n := 0
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(ht) << 24, PropertyCount: 64}.Execute(t)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			tb.Fatal(err)
		}
		for _, x := range h.Handle {
			if uint32(x)>>24 == uint32(ht) {
				n++
			}
		}
	}
	return n
}

func TestSwtpmRoundTrip(t *testing.T) {
	sw := startSwtpm(t)
	key, _ := signingKeys(t)
	bootTo(t, sw, "secureboot-on", ".linux", "kernel")
	s := NewSealer(sw, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sw, key)})
	ctx := context.Background()
	sealed, err := s.Seal(ctx, secret32(), []int{7, 15})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unseal(ctx, sealed)
	if err != nil || !bytes.Equal(got, secret32()) {
		t.Fatalf("unseal: %x, %v", got, err)
	}
	if n := transientHandles(t, sw); n != 0 {
		t.Errorf("%d transient handles left loaded after seal and unseal", n)
	}
	if err := LatchVolumeKey(sw, "STATE", []byte("volume key"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("unseal after latch: err = %v, want ErrPCRMismatch", err)
	}
	if err := MeasurePhase(sw, PhaseLeaveInitrd, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unseal after leave-initrd: err = %v, want ErrNoSignature", err)
	}
	if n := transientHandles(t, sw); n != 0 {
		t.Errorf("%d transient handles left loaded after failed unseals", n)
	}
	// The leak check itself must see a leaked handle.
	p, err := createPrimary(sw, srkTemplate())
	if err != nil {
		t.Fatal(err)
	}
	if n := transientHandles(t, sw); n != 1 {
		t.Errorf("leak check counted %d handles with one primary loaded, want 1", n)
	}
	flush(sw, p.handle)
}
