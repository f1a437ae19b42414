//go:build amd64 && !purego

package luks2

import (
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/cpu"
)

// argon2Paths runs f once for each compression this build can pick: the
// pure Go one always, the AVX2 one when the CPU has AVX2. useAVX2 is
// restored afterwards (no test of this package runs in parallel).
func argon2Paths(t *testing.T, f func(t *testing.T)) {
	saved := useAVX2
	defer func() { useAVX2 = saved }()
	for _, avx2 := range []bool{false, true} {
		if avx2 && !cpu.X86.HasAVX2 {
			continue
		}
		useAVX2 = avx2
		name := "generic"
		if avx2 {
			name = "avx2"
		}
		t.Run(name, f)
	}
}

// TestArgon2PAVX2MatchesGeneric: the AVX2 permutation equals the Go one on
// random blocks (the RFC vectors run whichever this CPU picks).
func TestArgon2PAVX2MatchesGeneric(t *testing.T) {
	if !useAVX2 {
		t.Fatal("this CPU has no AVX2: the assembly is not tested here")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		var a, b argon2Block
		for k := range a {
			a[k] = r.Uint64()
		}
		b = a
		argon2PAVX2(&a)
		argon2PGeneric(&b)
		if a != b {
			t.Fatalf("block %d: AVX2 and generic permutations differ", i)
		}
	}
}

// TestArgon2GAVX2MatchesGeneric: the AVX2 G, both modes and with out = y
// (as address generation calls it), equals the Go one.
func TestArgon2GAVX2MatchesGeneric(t *testing.T) {
	if !useAVX2 {
		t.Fatal("this CPU has no AVX2: the assembly is not tested here")
	}
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(b *argon2Block) {
		for k := range b {
			b[k] = r.Uint64()
		}
	}
	for i := range 100 {
		var x, y, out argon2Block
		fill(&x)
		fill(&y)
		fill(&out)
		for _, xor := range []bool{false, true} {
			o1, o2 := out, out
			var q argon2Block
			argon2G(&o1, &x, &y, &q, xor)
			argon2GGeneric(&o2, &x, &y, &q, xor)
			if o1 != o2 {
				t.Fatalf("block %d xor=%v: AVX2 and generic G differ", i, xor)
			}
		}
		y1, y2 := y, y
		var q argon2Block
		argon2G(&y1, &x, &y1, &q, false)
		argon2GGeneric(&y2, &x, &y2, &q, false)
		if y1 != y2 {
			t.Fatalf("block %d: G with out = y differs", i)
		}
	}
}
