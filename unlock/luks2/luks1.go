package luks2

import (
	"encoding/binary"
	"fmt"
	"io"
)

// LUKS1 header layout: a 592-byte binary header, eight 48-byte keyslots.
const (
	luks1HeaderSize   = 592
	luks1KeyslotStart = 208
	luks1KeyslotSize  = 48
	luks1Active       = 0x00AC71F3
	luks1DigestSize   = 20
)

// readLUKS1 maps a LUKS1 header onto Header (Version 1) so it can be listed
// and unlocked; every write path refuses it with ErrLUKS1ReadOnly.
func readLUKS1(r io.ReaderAt) (*Header, error) {
	b := make([]byte, luks1HeaderSize)
	if _, err := r.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read LUKS1 header: %w", err)
	}
	cipher := cstring(b[8:40]) + "-" + cstring(b[40:72])
	hashSpec := cstring(b[72:104])
	payload := uint64(binary.BigEndian.Uint32(b[104:108])) * sectorSize
	keyBytes := int(binary.BigEndian.Uint32(b[108:112]))
	if keyBytes <= 0 || keyBytes > 512 {
		return nil, fmt.Errorf("LUKS1 header: key size %d invalid", keyBytes)
	}
	h := &Header{
		Version:  1,
		UUID:     cstring(b[168:208]),
		Keyslots: map[int]Keyslot{},
		Tokens:   map[int]Token{},
		Segments: map[int]Segment{0: {ID: 0, Type: "crypt", Offset: payload, Dynamic: true, Encryption: cipher, SectorSize: sectorSize}},
		Warnings: []string{ErrLUKS1ReadOnly.Error()},
	}
	d := Digest{ID: 0, Type: "pbkdf2", Segments: []int{0}, Hash: hashSpec,
		Iterations: int(binary.BigEndian.Uint32(b[164:168])),
		Salt:       append([]byte(nil), b[132:164]...),
		Digest:     append([]byte(nil), b[112:112+luks1DigestSize]...)}
	for i := 0; i < 8; i++ {
		s := b[luks1KeyslotStart+i*luks1KeyslotSize:]
		if binary.BigEndian.Uint32(s[0:4]) != luks1Active {
			continue
		}
		stripes := int(binary.BigEndian.Uint32(s[44:48]))
		if stripes <= 0 || stripes*keyBytes > maxKeyslotsSize {
			return nil, fmt.Errorf("LUKS1 keyslot %d: %d stripes invalid", i, stripes)
		}
		h.Keyslots[i] = Keyslot{
			ID: i, Type: "luks1", KeySize: keyBytes, Priority: PriorityNormal,
			KDF:    KDF{Type: "pbkdf2", Hash: hashSpec, Iterations: int(binary.BigEndian.Uint32(s[4:8])), Salt: append([]byte(nil), s[8:40]...)},
			AFType: "luks1", AFStripes: stripes, AFHash: hashSpec,
			Area: Area{Type: "raw", Offset: uint64(binary.BigEndian.Uint32(s[40:44])) * sectorSize,
				Size: uint64(afSectors(keyBytes, stripes)), Encryption: cipher, KeySize: keyBytes},
		}
		d.Keyslots = append(d.Keyslots, i)
	}
	h.Digests = map[int]Digest{0: d}
	return h, nil
}
