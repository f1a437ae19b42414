package luks2

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/crypto/blake2b"
)

// Argon2 (RFC 9106), ours rather than golang.org/x/crypto/argon2 because
// of how a whole process pays for its memory. x/crypto allocates the
// blocks on the Go heap and XORs every new block into memory it has never
// written (version 0x13 XORs only from the second pass on, and into zeroes
// on the first that is the same result), so each fresh page is first read,
// mapping the shared zero page, then written, copying it: two page faults
// per 4 KiB, twice cryptsetup's, and the second costs a copy. Here the
// first pass only writes (argon2G), one fault per page as in cryptsetup,
// and the memory is our own mapping (argon2Memory), returned to the kernel
// rather than left on the heap when the key is derived. The compression
// function is Go (as fast as x/crypto's SSE4 assembly) and, on amd64 with
// AVX2, assembly of our own that runs P's four GB calls in one register
// set (argon2_amd64.s; 0.6-0.8x x/crypto's time, BenchmarkArgon2VsXCrypto);
// BLAKE2b is x/crypto's.

const (
	argon2Version   = 0x13
	argon2SyncPts   = 4 // slices per pass
	argon2BlockLen  = 128
	argon2AddrPairs = argon2BlockLen // reference pairs per address block
)

// Argon2 types (RFC 9106 section 3.1, y).
const (
	argon2d  = 0
	argon2i  = 1
	argon2id = 2
)

//go:generate go run gen_argon2p.go

type argon2Block [argon2BlockLen]uint64

// argon2Key derives keyLen bytes. memKiB is m in KiB (= blocks), lanes is p.
// secret and ad are K and X; LUKS2 uses neither (the RFC vectors do).
func argon2Key(mode int, password, salt, secret, ad []byte, passes, memKiB, lanes, keyLen uint32) ([]byte, error) {
	if passes < 1 || lanes < 1 || lanes > 1<<24-1 || memKiB < 8*lanes || keyLen < 4 {
		return nil, fmt.Errorf("argon2 costs time=%d memory=%d parallel=%d: %w", passes, memKiB, lanes, ErrInvalidParameter)
	}
	h0 := argon2H0(mode, password, salt, secret, ad, passes, memKiB, lanes, keyLen)
	defer clear(h0[:])

	laneLen := memKiB / (argon2SyncPts * lanes) * argon2SyncPts // q = m'/p
	mem, free, err := argon2Memory(int(laneLen * lanes))
	if err != nil {
		return nil, fmt.Errorf("argon2 memory %d KiB: %w", memKiB, err)
	}
	defer free()
	a := &argon2State{mem: mem, mode: mode, passes: passes, lanes: lanes, laneLen: laneLen, segLen: laneLen / argon2SyncPts}

	var buf [1024]byte
	var in [72]byte
	copy(in[:], h0[:])
	for l := uint32(0); l < lanes; l++ {
		binary.LittleEndian.PutUint32(in[68:], l)
		for j := uint32(0); j < 2; j++ {
			binary.LittleEndian.PutUint32(in[64:], j)
			argon2Hprime(buf[:], in[:])
			b := &mem[l*laneLen+j]
			for k := range b {
				b[k] = binary.LittleEndian.Uint64(buf[8*k:])
			}
		}
	}
	clear(in[:])

	var wg sync.WaitGroup
	for r := uint32(0); r < passes; r++ {
		for s := uint32(0); s < argon2SyncPts; s++ {
			for l := uint32(1); l < lanes; l++ {
				wg.Add(1)
				go func() {
					a.segment(r, s, l)
					wg.Done()
				}()
			}
			a.segment(r, s, 0)
			wg.Wait()
		}
	}

	// C = XOR of the last column; tag = H'^T(C).
	var c argon2Block
	c = mem[laneLen-1]
	for l := uint32(1); l < lanes; l++ {
		b := &mem[l*laneLen+laneLen-1]
		for k := range c {
			c[k] ^= b[k]
		}
	}
	for k, v := range c {
		binary.LittleEndian.PutUint64(buf[8*k:], v)
	}
	clear(c[:])
	out := make([]byte, keyLen)
	argon2Hprime(out, buf[:])
	clear(buf[:])
	return out, nil
}

// argon2H0 is H_0 (RFC 9106 section 3.2, step 1).
func argon2H0(mode int, password, salt, secret, ad []byte, passes, memKiB, lanes, keyLen uint32) [blake2b.Size]byte {
	h, _ := blake2b.New512(nil)
	var w [4]byte
	le := func(v uint32) {
		binary.LittleEndian.PutUint32(w[:], v)
		h.Write(w[:])
	}
	for _, v := range []uint32{lanes, keyLen, memKiB, passes, argon2Version, uint32(mode)} {
		le(v)
	}
	for _, s := range [][]byte{password, salt, secret, ad} {
		le(uint32(len(s)))
		h.Write(s)
	}
	var h0 [blake2b.Size]byte
	h.Sum(h0[:0])
	h.Reset()
	return h0
}

// argon2Hprime is the variable-length hash H' (RFC 9106 section 3.3),
// filling out.
func argon2Hprime(out, in []byte) {
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], uint32(len(out)))
	if len(out) <= blake2b.Size {
		h, _ := blake2b.New(len(out), nil)
		h.Write(t[:])
		h.Write(in)
		h.Sum(out[:0])
		return
	}
	var v [blake2b.Size]byte
	h, _ := blake2b.New512(nil)
	h.Write(t[:])
	h.Write(in)
	h.Sum(v[:0])
	n := copy(out, v[:32])
	for len(out)-n > blake2b.Size {
		v = blake2b.Sum512(v[:])
		n += copy(out[n:], v[:32])
	}
	last, _ := blake2b.New(len(out)-n, nil)
	last.Write(v[:])
	last.Sum(out[n:n])
	clear(v[:])
}

type argon2State struct {
	mem             []argon2Block
	mode            int
	passes, lanes   uint32
	laneLen, segLen uint32
}

// segment fills segment s of lane l in pass r (RFC 9106 section 3.4).
func (a *argon2State) segment(r, s, l uint32) {
	dataIndependent := a.mode == argon2i || (a.mode == argon2id && r == 0 && s < argon2SyncPts/2)
	// q is G's scratch: P of the blocks, secret. G leaves it zero, so no
	// intermediate state stays on the stack when the segment returns.
	var addr, input, zero, q argon2Block
	if dataIndependent {
		input[0], input[1], input[2] = uint64(r), uint64(l), uint64(s)
		input[3], input[4], input[5] = uint64(len(a.mem)), uint64(a.passes), uint64(a.mode)
	}
	nextAddresses := func() {
		input[6]++
		argon2G(&addr, &zero, &input, &q, false)
		argon2G(&addr, &zero, &addr, &q, false)
	}
	start := uint32(0)
	if r == 0 && s == 0 {
		start = 2 // B[l][0] and B[l][1] come from H0
		if dataIndependent {
			nextAddresses()
		}
	}
	base := l * a.laneLen
	for i := start; i < a.segLen; i++ {
		col := s*a.segLen + i // j within the lane
		prev := base + col - 1
		if col == 0 {
			prev = base + a.laneLen - 1
		}
		var rand uint64
		if dataIndependent {
			if i%argon2AddrPairs == 0 && !(r == 0 && s == 0 && i == start) {
				nextAddresses()
			}
			rand = addr[i%argon2AddrPairs]
		} else {
			rand = a.mem[prev][0]
		}
		ref := a.refIndex(rand, r, s, l, i)
		// The first pass writes without reading what was there: the
		// page is fresh, and a read would fault it in twice.
		argon2G(&a.mem[base+col], &a.mem[prev], &a.mem[ref], &q, r > 0)
	}
}

// refIndex maps the pseudo-random J1||J2 to the reference block
// (RFC 9106 section 3.4.1.2), as an index into mem.
func (a *argon2State) refIndex(rand uint64, r, s, l, i uint32) uint32 {
	j1, j2 := rand&0xffffffff, uint32(rand>>32)
	refLane := j2 % a.lanes
	if r == 0 && s == 0 {
		refLane = l
	}
	sameLane := refLane == l
	var size, startPos uint32
	if r == 0 {
		size = s * a.segLen // every finished segment of this pass
	} else {
		size = a.laneLen - a.segLen // all but the segment being filled
		startPos = (s + 1) % argon2SyncPts * a.segLen
	}
	if sameLane {
		size += i - 1 // and this segment up to the previous block
	} else if i == 0 {
		size-- // not the other lane's last block
	}
	x := j1 * j1 >> 32
	y := uint64(size) * x >> 32
	z := uint64(size) - 1 - y
	return refLane*a.laneLen + uint32((uint64(startPos)+z)%uint64(a.laneLen))
}

// argon2GGeneric is the compression function G (RFC 9106 section 3.5):
// out = P(x^y) ^ x ^ y, or out ^= that when xor is set (later passes).
// argon2G picks it or an AVX2 one (argon2_amd64.go). q is the caller's
// zero scratch block; G leaves it zero again (it held P(x^y), secret). A
// scratch of the caller's costs no more than a local, which Go zeroes on
// every call, and leaves nothing behind on a freed stack.
func argon2GGeneric(out, x, y, q *argon2Block, xor bool) {
	// Slices of the arrays, so that Go checks each pointer for nil once
	// rather than on every word.
	qs, xs, ys := q[:], x[:], y[:]
	for k := range qs {
		qs[k] = xs[k] ^ ys[k]
	}
	argon2P(q)
	// x and y are read again rather than kept: out may be y.
	if xor {
		os := out[:]
		for k := range os {
			os[k] ^= qs[k] ^ xs[k] ^ ys[k]
		}
		clear(qs)
		return
	}
	// A store first: slicing out checks it for nil with a load, and a
	// load from a page never written maps the zero page, so the stores
	// after it would fault a second time (as x/crypto's XOR into fresh
	// memory does).
	out[0] = qs[0] ^ xs[0] ^ ys[0]
	os := out[:]
	for k := 1; k < len(os); k++ {
		os[k] = qs[k] ^ xs[k] ^ ys[k]
	}
	clear(qs)
}
