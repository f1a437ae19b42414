//go:build !amd64 || purego

package luks2

// argon2P applies the permutation P to the rows, then the columns, of q.
func argon2P(q *argon2Block) { argon2PGeneric(q) }

// argon2G is the compression function G (argon2GGeneric).
func argon2G(out, x, y, q *argon2Block, xor bool) { argon2GGeneric(out, x, y, q, xor) }
