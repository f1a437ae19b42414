package luks2

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash"
)

// The anti-forensic splitter (LUKS1 "AF", also used by LUKS2 keyslots):
// the key is spread over stripes blocks so that destroying any part of the
// area destroys the key.

// diffuse replaces d by the hash-based diffusion of itself, in place.
func diffuse(newHash func() hash.Hash, d []byte) {
	h := newHash()
	ds := h.Size()
	var iv [4]byte
	var sum []byte
	for i, off := 0, 0; off < len(d); i, off = i+1, off+ds {
		end := min(off+ds, len(d))
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		h.Reset()
		h.Write(iv[:])
		h.Write(d[off:end])
		sum = h.Sum(sum[:0])
		copy(d[off:end], sum)
	}
	clear(sum)
}

// afMerge recovers a keyLen-byte key from src (stripes*keyLen bytes).
func afMerge(hashName string, src []byte, keyLen, stripes int) ([]byte, error) {
	newHash, err := hashByName(hashName)
	if err != nil {
		return nil, fmt.Errorf("AF hash: %w", err)
	}
	if len(src) < keyLen*stripes {
		return nil, fmt.Errorf("AF material too short")
	}
	d := make([]byte, keyLen)
	for i := 0; i < stripes-1; i++ {
		xorInto(d, src[i*keyLen:(i+1)*keyLen])
		diffuse(newHash, d)
	}
	xorInto(d, src[(stripes-1)*keyLen:stripes*keyLen])
	return d, nil
}

// afSplit spreads key over stripes blocks (returned, keyLen*stripes bytes).
func afSplit(hashName string, key []byte, stripes int) ([]byte, error) {
	newHash, err := hashByName(hashName)
	if err != nil {
		return nil, fmt.Errorf("AF hash: %w", err)
	}
	n := len(key)
	dst := make([]byte, n*stripes)
	if _, err := rand.Read(dst[:n*(stripes-1)]); err != nil {
		return nil, err
	}
	d := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(d, dst[i*n:(i+1)*n])
		diffuse(newHash, d)
	}
	last := dst[(stripes-1)*n:]
	for i := range last {
		last[i] = d[i] ^ key[i]
	}
	clear(d)
	return dst, nil
}

func xorInto(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}
