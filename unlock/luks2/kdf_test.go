package luks2

import (
	"errors"
	"math"
	"testing"
)

// TestDeriveKeyArgon2Bounds: argon2 costs outside cryptsetup's bounds, and
// a time above 2^32-1 (which uint32 would wrap to a cheap 0 or 1), are
// refused before any work.
func TestDeriveKeyArgon2Bounds(t *testing.T) {
	var maxU32 uint64 = math.MaxUint32
	ok := KDF{Type: "argon2id", Time: 1, Memory: 8, Parallel: 1, Salt: make([]byte, 32)}
	tests := []struct {
		name string
		edit func(*KDF)
	}{
		{"time 0", func(k *KDF) { k.Time = 0 }},
		{"time 2^32", func(k *KDF) { k.Time = int(maxU32 + 1) }},
		{"time 2^32+1", func(k *KDF) { k.Time = int(maxU32 + 2) }},
		{"argon2i time 2^32+1", func(k *KDF) { k.Type, k.Time = "argon2i", int(maxU32+2) }},
		{"memory 7", func(k *KDF) { k.Memory = 7 }},
		{"memory 4 GiB + 1 KiB", func(k *KDF) { k.Memory = 4<<20 + 1 }},
		{"parallel 0", func(k *KDF) { k.Parallel = 0 }},
		{"parallel 256", func(k *KDF) { k.Parallel = 256 }},
	}
	for _, tt := range tests {
		k := ok
		tt.edit(&k)
		if key, err := deriveKey(k, []byte("pass"), 32); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("%s: key %d bytes, err %v; want ErrInvalidParameter", tt.name, len(key), err)
		}
	}
	if _, err := deriveKey(ok, []byte("pass"), 32); err != nil {
		t.Fatalf("the valid base case: %v", err)
	}
}
