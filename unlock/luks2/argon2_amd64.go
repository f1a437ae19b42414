//go:build amd64 && !purego

package luks2

import "golang.org/x/sys/cpu"

// useAVX2 picks the AVX2 permutation, four 64-bit lanes a register: P's
// four column (then diagonal) GB calls run as one. A CPU fact, fixed at
// start like x/crypto's feature flags, not state.
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func argon2PAVX2(q *argon2Block)

//go:noescape
func argon2Xor3AVX2(dst, a, b, c *argon2Block)

//go:noescape
func argon2Xor4AVX2(dst, a, b, c *argon2Block)

// argon2G is the compression function G: out = P(x^y) ^ x ^ y, or out ^=
// that when xor is set; q is a zero scratch block it leaves zero (see
// argon2GGeneric). The AVX2 path only stores to out on the first pass (no
// nil-check load: see argon2GGeneric), and out may be y.
func argon2G(out, x, y, q *argon2Block, xor bool) {
	if !useAVX2 {
		argon2GGeneric(out, x, y, q, xor)
		return
	}
	argon2Xor3AVX2(q, x, y, q) // q is zero: q = x ^ y
	argon2PAVX2(q)
	if xor {
		argon2Xor4AVX2(out, q, x, y)
	} else {
		argon2Xor3AVX2(out, q, x, y)
	}
	clear(q[:])
}

// argon2P applies the permutation P to the rows, then the columns, of q.
func argon2P(q *argon2Block) {
	if useAVX2 {
		argon2PAVX2(q)
		return
	}
	argon2PGeneric(q)
}
