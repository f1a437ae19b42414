package tpm

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// openSimulator starts the go-tpm-tools simulator (Microsoft reference TPM,
// cgo) for one test, skipping when it cannot run (no cgo, no libssl).
func openSimulator(tb testing.TB) transport.TPMCloser {
	tb.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		testenv.Missing(tb, "TPM simulator unavailable (needs cgo, gcc and libssl-dev): %v", err)
	}
	tb.Cleanup(func() { _ = sim.Close() })
	return sim
}

var (
	testKeyOnce sync.Once
	testKey     *rsa.PrivateKey
	testKey2    *rsa.PrivateKey
)

// signingKeys returns two RSA 2048 PCR signing keys shared by the tests.
func signingKeys(tb testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	tb.Helper()
	testKeyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if testKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKey, testKey2
}

// bootTo makes the simulator look like a machine booted with Secure Boot
// state sbState and a UKI measured as ukiEvents, in the initrd (enter-initrd).
func bootTo(tb testing.TB, t transport.TPM, sbState string, ukiEvents ...string) {
	tb.Helper()
	d := sha256.Sum256([]byte(sbState))
	if err := ExtendPCR(t, SecureBootPCR, d[:]); err != nil {
		tb.Fatal(err)
	}
	for _, e := range ukiEvents {
		d := sha256.Sum256([]byte(e))
		if err := ExtendPCR(t, UKIPCR, d[:]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := MeasurePhase(t, PhaseEnterInitrd, nil); err != nil {
		tb.Fatal(err)
	}
}

// signCurrent signs the current PCR 11 value with key.
func signCurrent(tb testing.TB, t transport.TPM, key *rsa.PrivateKey) Signatures {
	tb.Helper()
	v, err := ReadPCRs(t, []int{UKIPCR})
	if err != nil {
		tb.Fatal(err)
	}
	sig, err := SignPolicy(key, []int{UKIPCR}, v)
	if err != nil {
		tb.Fatal(err)
	}
	return Signatures{"sha256": {sig}}
}

// secret32 returns 32 distinct test bytes.
func secret32() []byte {
	s := make([]byte, 32)
	for i := range s {
		s[i] = byte(i*7 + 3)
	}
	return s
}

// sealInInitrd boots t to Secure Boot on and our UKI in the initrd, makes a
// sealer whose signatures match that PCR 11, and seals a fresh secret with
// the default PCRs.
func sealInInitrd(tb testing.TB, t transport.TPM) (*Sealer, *Sealed) {
	tb.Helper()
	key, _ := signingKeys(tb)
	bootTo(tb, t, "sb", "uki")
	s := NewSealer(t, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(tb, t, key)})
	sealed, err := s.Seal(context.Background(), secret32(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s, sealed
}
