package luks2

import (
	"crypto/aes"
	"fmt"

	"golang.org/x/crypto/xts"
)

const sectorSize = 512

// areaCipher en/decrypts keyslot key material: 512-byte sectors, IV = sector
// number counted from the start of the area (dm-crypt plain64).
type areaCipher struct{ c *xts.Cipher }

// newAreaCipher supports the keyslot ciphers cryptsetup 2.6 writes:
// aes-xts-plain64 (and aes-xts-plain, identical below 2 TiB).
func newAreaCipher(spec string, key []byte) (*areaCipher, error) {
	switch spec {
	case "aes-xts-plain64", "aes-xts-plain":
	default:
		return nil, fmt.Errorf("keyslot cipher %q: %w (supported: aes-xts-plain64)", spec, ErrUnsupported)
	}
	switch len(key) {
	case 32, 48, 64:
	default:
		return nil, fmt.Errorf("keyslot cipher %s with a %d-bit key: %w (supported: 256, 384, 512)", spec, len(key)*8, ErrUnsupported)
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, fmt.Errorf("keyslot cipher %s: %w", spec, err)
	}
	return &areaCipher{c}, nil
}

func (a *areaCipher) decrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		a.c.Decrypt(s, s, uint64(i))
	}
}

func (a *areaCipher) encrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		a.c.Encrypt(s, s, uint64(i))
	}
}

// afSectors is the AF material length rounded up to whole sectors.
func afSectors(keyLen, stripes int) int {
	return (keyLen*stripes + sectorSize - 1) / sectorSize * sectorSize
}
