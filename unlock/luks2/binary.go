package luks2

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Binary header layout (LUKS2 on-disk format, all integers big-endian).
const (
	binHeaderSize = 4096
	offVersion    = 6
	offHdrSize    = 8
	offSeqid      = 16
	offLabel      = 24
	offCsumAlg    = 72
	offSalt       = 104
	offUUID       = 168
	offSubsystem  = 208
	offHdrOffset  = 256
	offCsum       = 448
	lenLabel      = 48
	lenCsumAlg    = 32
	lenSalt       = 64
	lenUUID       = 40
	lenSubsystem  = 48
	lenCsum       = 64
)

var (
	magicPrimary   = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}
	magicSecondary = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}
)

// secondaryOffsets are where a secondary header can start: the allowed
// metadata sizes (16 KiB .. 4 MiB), as cryptsetup probes them.
var secondaryOffsets = []int64{
	0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
}

func validMetadataSize(n uint64) bool {
	for _, o := range secondaryOffsets {
		if uint64(o) == n {
			return true
		}
	}
	return false
}

// headerCopy is one decoded, checksum-verified metadata copy.
type headerCopy struct {
	offset    int64
	hdrSize   uint64
	seqid     uint64
	label     string
	csumAlg   string
	uuid      string
	subsystem string
	jsonText  []byte
	meta      *metadata
	exact     bool
}

func checksumHash(name string) (func() hash.Hash, bool) {
	switch name {
	case "sha256":
		return sha256.New, true
	case "sha512":
		return sha512.New, true
	case "sha1":
		return sha1.New, true
	}
	return nil, false
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// errNoMagic marks a copy without any LUKS signature (as opposed to damage).
var errNoMagic = errors.New("no LUKS2 signature")

// readCopy reads and verifies the metadata copy at off.
func readCopy(r io.ReaderAt, off int64) (*headerCopy, error) {
	bin := make([]byte, binHeaderSize)
	n, err := r.ReadAt(bin, off)
	magic := magicSecondary
	if off == 0 {
		magic = magicPrimary
	}
	if n < len(magic) || !bytes.Equal(bin[:len(magic)], magic) {
		return nil, errNoMagic
	}
	if err != nil && n < binHeaderSize {
		return nil, fmt.Errorf("read header at %d: %w (device truncated?)", off, err)
	}
	if v := binary.BigEndian.Uint16(bin[offVersion:]); v != 2 {
		return nil, fmt.Errorf("header at %d: version %d, want 2", off, v)
	}
	c := &headerCopy{
		offset:    off,
		hdrSize:   binary.BigEndian.Uint64(bin[offHdrSize:]),
		seqid:     binary.BigEndian.Uint64(bin[offSeqid:]),
		label:     cstring(bin[offLabel : offLabel+lenLabel]),
		csumAlg:   cstring(bin[offCsumAlg : offCsumAlg+lenCsumAlg]),
		uuid:      cstring(bin[offUUID : offUUID+lenUUID]),
		subsystem: cstring(bin[offSubsystem : offSubsystem+lenSubsystem]),
	}
	if !validMetadataSize(c.hdrSize) {
		return nil, fmt.Errorf("header at %d: invalid header size %d", off, c.hdrSize)
	}
	if got := binary.BigEndian.Uint64(bin[offHdrOffset:]); got != uint64(off) {
		return nil, fmt.Errorf("header at %d: records offset %d", off, got)
	}
	if off != 0 && uint64(off) != c.hdrSize {
		return nil, fmt.Errorf("secondary header at %d: header size %d does not match its offset", off, c.hdrSize)
	}
	newHash, ok := checksumHash(c.csumAlg)
	if !ok {
		return nil, fmt.Errorf("header at %d: checksum algorithm %q: %w", off, c.csumAlg, ErrUnsupported)
	}
	full := make([]byte, c.hdrSize)
	if _, err := r.ReadAt(full, off); err != nil {
		return nil, fmt.Errorf("read header at %d (%d bytes): %w (device truncated?)", off, c.hdrSize, err)
	}
	h := newHash()
	stored := append([]byte(nil), full[offCsum:offCsum+h.Size()]...)
	clear(full[offCsum : offCsum+lenCsum])
	h.Write(full)
	if !bytes.Equal(h.Sum(nil), stored) {
		return nil, fmt.Errorf("header at %d: checksum mismatch", off)
	}
	area := full[binHeaderSize:]
	end := bytes.IndexByte(area, 0)
	if end < 0 {
		return nil, fmt.Errorf("header at %d: JSON area not NUL-terminated", off)
	}
	c.jsonText = append([]byte(nil), area[:end]...)
	m, exact, err := parseMetadata(c.jsonText)
	if err != nil {
		return nil, fmt.Errorf("header at %d: %w", off, err)
	}
	if m.Config.JSONSize != c.hdrSize-binHeaderSize {
		return nil, fmt.Errorf("header at %d: json_size %d does not match header size %d", off, m.Config.JSONSize, c.hdrSize)
	}
	c.meta, c.exact = m, exact
	return c, nil
}

// encodeCopy renders one complete metadata copy (binary header + JSON area)
// for offset off (0 = primary, hdrSize = secondary).
func encodeCopy(off int64, hdrSize, seqid uint64, label, uuid, subsystem string, jsonText, salt []byte) ([]byte, error) {
	if uint64(len(jsonText)) >= hdrSize-binHeaderSize {
		return nil, fmt.Errorf("LUKS2 JSON metadata (%d bytes) does not fit the %d-byte JSON area", len(jsonText), hdrSize-binHeaderSize)
	}
	if len(label) >= lenLabel || len(subsystem) >= lenSubsystem || len(uuid) >= lenUUID {
		return nil, fmt.Errorf("%w: label and subsystem must be shorter than 48 bytes", ErrInvalidParameter)
	}
	b := make([]byte, hdrSize)
	if off == 0 {
		copy(b, magicPrimary)
	} else {
		copy(b, magicSecondary)
	}
	binary.BigEndian.PutUint16(b[offVersion:], 2)
	binary.BigEndian.PutUint64(b[offHdrSize:], hdrSize)
	binary.BigEndian.PutUint64(b[offSeqid:], seqid)
	copy(b[offLabel:], label)
	copy(b[offCsumAlg:], "sha256")
	copy(b[offSalt:offSalt+lenSalt], salt)
	copy(b[offUUID:], uuid)
	copy(b[offSubsystem:], subsystem)
	binary.BigEndian.PutUint64(b[offHdrOffset:], uint64(off))
	copy(b[binHeaderSize:], jsonText)
	sum := sha256.Sum256(b)
	copy(b[offCsum:], sum[:])
	return b, nil
}
