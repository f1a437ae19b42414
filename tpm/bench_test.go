package tpm

import (
	"context"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
)

// Seal and unseal cost on the simulator (in process) and on swtpm (over a
// loopback socket): compare them side by side with `make bench`.

func benchSeal(b *testing.B, t transport.TPM) {
	key, _ := signingKeys(b)
	bootTo(b, t, "sb", "uki")
	s := NewSealer(t, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(b, t, key)})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Seal(ctx, secret32(), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func benchUnseal(b *testing.B, t transport.TPM) {
	key, _ := signingKeys(b)
	bootTo(b, t, "sb", "uki")
	s := NewSealer(t, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(b, t, key)})
	ctx := context.Background()
	sealed, err := s.Seal(ctx, secret32(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Unseal(ctx, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealSimulator(b *testing.B)   { benchSeal(b, openSimulator(b)) }
func BenchmarkUnsealSimulator(b *testing.B) { benchUnseal(b, openSimulator(b)) }
func BenchmarkSealSwtpm(b *testing.B)       { benchSeal(b, startSwtpm(b)) }
func BenchmarkUnsealSwtpm(b *testing.B)     { benchUnseal(b, startSwtpm(b)) }
