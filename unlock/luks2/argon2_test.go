package luks2

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	"golang.org/x/crypto/argon2"
)

// TestArgon2RFC9106 checks the three test vectors of RFC 9106 section 5
// (secret and associated data included, t=3, m=32 KiB, p=4, 32 bytes).
// Each runs on every compression path this build and CPU have.
func TestArgon2RFC9106(t *testing.T) { argon2Paths(t, testArgon2RFC9106) }

func testArgon2RFC9106(t *testing.T) {
	rep := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	for _, tc := range []struct {
		name string
		mode int
		want string
	}{
		{"argon2d", argon2d, "512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"},
		{"argon2i", argon2i, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"},
		{"argon2id", argon2id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := argon2Key(tc.mode, rep(1, 32), rep(2, 16), rep(3, 8), rep(4, 12), 3, 32, 4, 32)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tc.want {
				t.Errorf("got %x, want %s", got, tc.want)
			}
		})
	}
}

// TestArgon2MatchesXCrypto compares with golang.org/x/crypto/argon2 over
// costs that exercise memory rounding (m not a multiple of 4p), several
// address blocks per segment, one and many lanes, and key lengths below,
// at and above 64 bytes (H' with one, two and several BLAKE2b calls).
// Each runs on every compression path this build and CPU have.
func TestArgon2MatchesXCrypto(t *testing.T) { argon2Paths(t, testArgon2MatchesXCrypto) }

func testArgon2MatchesXCrypto(t *testing.T) {
	pass, salt := []byte("correct horse battery staple"), []byte("0123456789abcdef0123456789abcdef")
	for _, c := range []struct{ time, mem, lanes, keyLen uint32 }{
		{1, 8, 1, 32}, {1, 64, 2, 64}, {2, 1030, 3, 65}, {3, 2048, 4, 100}, {1, 4096, 1, 16}, {4, 777, 5, 200},
	} {
		name := fmt.Sprintf("t%d-m%d-p%d-k%d", c.time, c.mem, c.lanes, c.keyLen)
		t.Run(name, func(t *testing.T) {
			id, err := argon2Key(argon2id, pass, salt, nil, nil, c.time, c.mem, c.lanes, c.keyLen)
			if err != nil {
				t.Fatal(err)
			}
			if want := argon2.IDKey(pass, salt, c.time, c.mem, uint8(c.lanes), c.keyLen); !bytes.Equal(id, want) {
				t.Errorf("argon2id: got %x, want %x", id, want)
			}
			i, err := argon2Key(argon2i, pass, salt, nil, nil, c.time, c.mem, c.lanes, c.keyLen)
			if err != nil {
				t.Fatal(err)
			}
			if want := argon2.Key(pass, salt, c.time, c.mem, uint8(c.lanes), c.keyLen); !bytes.Equal(i, want) {
				t.Errorf("argon2i: got %x, want %x", i, want)
			}
		})
	}
}

// TestArgon2GWipesScratch: G leaves its scratch block, which held P(x^y),
// zero again on both paths, in both modes and with out = y, so no
// intermediate state of the KDF stays on a goroutine's stack.
func TestArgon2GWipesScratch(t *testing.T) {
	argon2Paths(t, func(t *testing.T) {
		var x, y, out argon2Block
		for i := range x {
			x[i], y[i], out[i] = uint64(i)*0x9e3779b97f4a7c15, uint64(i)^0xdeadbeef, ^uint64(i)
		}
		for _, c := range []struct {
			name string
			out  *argon2Block
			xor  bool
		}{{"write", &out, false}, {"xor", &out, true}, {"out=y", &y, false}} {
			var q argon2Block
			before := *c.out
			argon2G(c.out, &x, &y, &q, c.xor)
			if *c.out == before {
				t.Fatalf("%s: G wrote nothing", c.name)
			}
			if q != (argon2Block{}) {
				t.Fatalf("%s: G left its scratch block non-zero", c.name)
			}
		}
	})
}

// BenchmarkArgon2VsXCrypto compares the compression speed with
// x/crypto's (SSE4 assembly on amd64) in one process, one lane so the
// numbers are per core. 1 MiB, so that the blocks stay in cache and the
// page faults of our fresh mapping (x/crypto reuses the warm heap) are a
// few hundred: the whole-process cost is images/bench/kdf.sh's.
func BenchmarkArgon2VsXCrypto(b *testing.B) {
	pass, salt := []byte("pass"), []byte("0123456789abcdef")
	const mem, passes = 1 << 10, 64
	b.Run("ours", func(b *testing.B) {
		for b.Loop() {
			if _, err := argon2Key(argon2id, pass, salt, nil, nil, passes, mem, 1, 32); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(mem*passes), "ns/block")
	})
	b.Run("x-crypto", func(b *testing.B) {
		for b.Loop() {
			argon2.IDKey(pass, salt, passes, mem, 1, 32)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(mem*passes), "ns/block")
	})
}

// BenchmarkArgon2G is the compression function alone, hot in cache.
func BenchmarkArgon2G(b *testing.B) {
	var x, y, out, q argon2Block
	for i := range x {
		x[i], y[i] = uint64(i)*0x9e3779b97f4a7c15, uint64(i)^0xdeadbeef
	}
	for b.Loop() {
		argon2G(&out, &x, &y, &q, true)
	}
}
