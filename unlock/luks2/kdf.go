package luks2

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
)

// hashByName maps LUKS hash names to Go hashes.
func hashByName(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("hash %q: %w (supported: sha1, sha256, sha384, sha512)", name, ErrUnsupported)
}

// deriveKey runs the keyslot KDF. The caller zeroes the result.
func deriveKey(k KDF, passphrase []byte, keyLen int) ([]byte, error) {
	switch k.Type {
	case "pbkdf2":
		h, err := hashByName(k.Hash)
		if err != nil {
			return nil, err
		}
		if k.Iterations < 1 {
			return nil, fmt.Errorf("pbkdf2 iterations %d: %w", k.Iterations, ErrInvalidParameter)
		}
		return pbkdf2Key(h, passphrase, k.Salt, k.Iterations, keyLen), nil
	case "argon2id", "argon2i":
		// cryptsetup's bounds; they also keep a hostile header from asking
		// for more than 4 GiB, or a time that uint32 would wrap.
		if k.Time < 1 || uint64(k.Time) > math.MaxUint32 || k.Memory < 8 || k.Memory > 4<<20 || k.Parallel < 1 || k.Parallel > 255 {
			return nil, fmt.Errorf("%s costs time=%d memory=%d parallel=%d: %w", k.Type, k.Time, k.Memory, k.Parallel, ErrInvalidParameter)
		}
		mode := argon2i
		if k.Type == "argon2id" {
			mode = argon2id
		}
		return argon2Key(mode, passphrase, k.Salt, nil, nil, uint32(k.Time), uint32(k.Memory), uint32(k.Parallel), uint32(keyLen))
	}
	return nil, fmt.Errorf("KDF %q: %w (supported: argon2id, argon2i, pbkdf2)", k.Type, ErrUnsupported)
}

// pbkdf2Key is PBKDF2-HMAC (RFC 8018). It is ours rather than
// golang.org/x/crypto/pbkdf2 or crypto/pbkdf2 because those copy the
// password into an immutable string, which cannot be zeroed. Snapshotting
// the keyed inner and outer hash states once keeps each iteration at two
// block compressions; BenchmarkPBKDF2VsStdlib shows it no slower than
// crypto/pbkdf2, and BenchmarkUnlockVsCryptsetup faster than cryptsetup.
func pbkdf2Key(newHash func() hash.Hash, password, salt []byte, iter, keyLen int) []byte {
	inner, outer := newHash(), newHash()
	bs, hs := inner.BlockSize(), inner.Size()
	key := make([]byte, bs)
	if len(password) > bs {
		h := newHash()
		h.Write(password)
		copy(key, h.Sum(nil))
	} else {
		copy(key, password)
	}
	pad := make([]byte, bs)
	for i := range pad {
		pad[i] = key[i] ^ 0x36
	}
	inner.Write(pad)
	for i := range pad {
		pad[i] = key[i] ^ 0x5c
	}
	outer.Write(pad)
	clear(key)
	clear(pad)
	innerState, err1 := inner.(encoding.BinaryMarshaler).MarshalBinary()
	outerState, err2 := outer.(encoding.BinaryMarshaler).MarshalBinary()
	if err1 != nil || err2 != nil {
		panic("luks2: hash state not marshalable")
	}
	defer clear(innerState)
	defer clear(outerState)
	reset := func(h hash.Hash, state []byte) {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
			panic("luks2: hash state not unmarshalable")
		}
	}

	out := make([]byte, 0, keyLen+hs)
	u := make([]byte, 0, hs)
	t := make([]byte, hs)
	var ctr [4]byte
	for block := uint32(1); len(out) < keyLen; block++ {
		binary.BigEndian.PutUint32(ctr[:], block)
		reset(inner, innerState)
		inner.Write(salt)
		inner.Write(ctr[:])
		u = inner.Sum(u[:0])
		reset(outer, outerState)
		outer.Write(u)
		u = outer.Sum(u[:0])
		copy(t, u)
		for n := 1; n < iter; n++ {
			reset(inner, innerState)
			inner.Write(u)
			u = inner.Sum(u[:0])
			reset(outer, outerState)
			outer.Write(u)
			u = outer.Sum(u[:0])
			for i := range t {
				t[i] ^= u[i]
			}
		}
		out = append(out, t...)
	}
	clear(u[:cap(u)])
	clear(t)
	// Hash states keep the key-derived pads; overwrite them.
	inner.Reset()
	outer.Reset()
	res := out[:keyLen]
	clear(out[keyLen:cap(out)])
	return res
}

type hashT = hash.Hash
