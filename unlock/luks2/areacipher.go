package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/xts"
)

const sectorSize = 512

// areaCipher en/decrypts keyslot key material in 512-byte sectors whose IV
// is derived from the sector number counted from the start of the area, as
// dm-crypt does.
type areaCipher interface {
	decrypt(buf []byte)
	encrypt(buf []byte)
}

// newAreaCipher supports the keyslot ciphers cryptsetup writes by default,
// aes-xts-plain64 (and aes-xts-plain, identical below 2 TiB), and for
// unlocking older volumes aes-cbc-essiv:sha256 and aes-cbc-plain64/plain.
// Only aes-xts-plain64 is ever written.
func newAreaCipher(spec string, key []byte) (areaCipher, error) {
	switch spec {
	case "aes-xts-plain64", "aes-xts-plain":
		switch len(key) {
		case 32, 48, 64:
		default:
			return nil, fmt.Errorf("keyslot cipher %s with a %d-bit key: %w (supported: 256, 384, 512)", spec, len(key)*8, ErrUnsupported)
		}
		c, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			return nil, fmt.Errorf("keyslot cipher %s: %w", spec, err)
		}
		return xtsArea{c}, nil
	case "aes-cbc-essiv:sha256", "aes-cbc-plain64", "aes-cbc-plain":
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("keyslot cipher %s with a %d-bit key: %w", spec, len(key)*8, ErrUnsupported)
		}
		a := cbcArea{block: b}
		if spec == "aes-cbc-essiv:sha256" {
			salt := sha256.Sum256(key)
			a.essiv, _ = aes.NewCipher(salt[:])
			clear(salt[:])
		}
		return a, nil
	}
	return nil, fmt.Errorf("keyslot cipher %q: %w (supported: aes-xts-plain64; for reading also aes-cbc-essiv:sha256, aes-cbc-plain64)", spec, ErrUnsupported)
}

type xtsArea struct{ c *xts.Cipher }

func (a xtsArea) decrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		a.c.Decrypt(s, s, uint64(i))
	}
}

func (a xtsArea) encrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		a.c.Encrypt(s, s, uint64(i))
	}
}

// cbcArea is AES-CBC with a plain64 IV (sector number, little-endian) or an
// ESSIV one (that IV encrypted with AES keyed by SHA-256 of the key).
type cbcArea struct {
	block, essiv cipher.Block
}

func (a cbcArea) iv(sector uint64) []byte {
	iv := make([]byte, aes.BlockSize)
	binary.LittleEndian.PutUint64(iv, sector)
	if a.essiv != nil {
		a.essiv.Encrypt(iv, iv)
	}
	return iv
}

func (a cbcArea) decrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		cipher.NewCBCDecrypter(a.block, a.iv(uint64(i))).CryptBlocks(s, s)
	}
}

func (a cbcArea) encrypt(buf []byte) {
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		cipher.NewCBCEncrypter(a.block, a.iv(uint64(i))).CryptBlocks(s, s)
	}
}

// afSectors is the AF material length rounded up to whole sectors.
func afSectors(keyLen, stripes int) int {
	return (keyLen*stripes + sectorSize - 1) / sectorSize * sectorSize
}
