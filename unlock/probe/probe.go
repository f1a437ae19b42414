// Package probe finds filesystem, container and RAID signatures on a
// partition and decides whether it is empty, the one condition under which
// cryptinit formats it.
//
// # The "empty" rule
//
// A partition is empty when (1) none of the signatures below is found, and
// (2) its first ZeroCheckSize (1 MiB) bytes and its last ZeroCheckSize bytes
// are all zero. Rule 1 alone is not enough: plain dm-crypt, a foreign or
// damaged filesystem, or an old volume whose first sector was overwritten
// carry no signature we know, yet hold data. Requiring zeros where every
// format we know keeps its metadata (the first MiB: superblocks, labels,
// LUKS headers; the last MiB: MD 0.90/1.0 superblocks, ZFS labels 2-3, a GPT
// backup) errs on the side of never formatting data. New disks, thin volumes
// and partitions wiped with Wipe read as zeros there, so they are formatted.
// Reading 2 MiB costs a few milliseconds, next to the hundreds a KDF takes.
package probe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ZeroCheckSize is how much of the start and the end of a partition must be
// zero for it to count as empty.
const ZeroCheckSize = 1 << 20

// Signature is one thing found on the partition.
type Signature struct {
	Name   string // e.g. "xfs", "ext4", "LUKS2", "MD RAID (v1.2)"
	Offset int64  // where its magic is
}

func (s Signature) String() string { return fmt.Sprintf("%s at offset %d", s.Name, s.Offset) }

// Result is what Probe found.
type Result struct {
	Signatures []Signature
	// NonZeroAt is the offset of the first non-zero byte in the checked
	// regions, or -1 when they are all zero.
	NonZeroAt int64
}

// Empty reports whether the partition may be formatted.
func (r *Result) Empty() bool { return len(r.Signatures) == 0 && r.NonZeroAt < 0 }

// Describe says what makes the partition non-empty.
func (r *Result) Describe() string {
	if len(r.Signatures) > 0 {
		names := make([]string, len(r.Signatures))
		for i, s := range r.Signatures {
			names[i] = s.String()
		}
		return strings.Join(names, ", ")
	}
	if r.NonZeroAt >= 0 {
		return fmt.Sprintf("no known signature, but non-zero data at offset %d (unknown content)", r.NonZeroAt)
	}
	return "empty"
}

// ErrNotEmpty is wrapped by NotEmptyError.
var ErrNotEmpty = errors.New("partition is not empty")

// NotEmptyError names what was found on a partition that was to be formatted.
type NotEmptyError struct{ Result *Result }

func (e *NotEmptyError) Error() string {
	return "partition is not empty (" + e.Result.Describe() + "); nothing was written. " +
		"If its contents are no longer needed, ask for a wipe (cryptctl meta request-wipe --volume ID META) and boot again"
}

func (e *NotEmptyError) Unwrap() error { return ErrNotEmpty }

// CheckEmpty probes r and returns a *NotEmptyError unless it is empty.
func CheckEmpty(r io.ReaderAt, size int64) (*Result, error) {
	res, err := Probe(r, size)
	if err != nil {
		return nil, err
	}
	if !res.Empty() {
		return res, &NotEmptyError{Result: res}
	}
	return res, nil
}

// Probe reads the partition's start and end (size bytes long) and reports
// every known signature and the first non-zero byte of the checked regions.
func Probe(r io.ReaderAt, size int64) (*Result, error) {
	head := make([]byte, min(size, headSize))
	if err := readFull(r, head, 0); err != nil {
		return nil, fmt.Errorf("probe: read start: %w", err)
	}
	tailLen := min(size, tailSize)
	tail := make([]byte, tailLen)
	if err := readFull(r, tail, size-tailLen); err != nil {
		return nil, fmt.Errorf("probe: read end: %w", err)
	}
	res := &Result{NonZeroAt: -1}
	d := &disk{r: r, head: head, tail: tail, tailOff: size - tailLen, size: size}
	for _, m := range matchers {
		res.Signatures = append(res.Signatures, m(d)...)
	}
	if i := firstNonZero(head[:min(len(head), ZeroCheckSize)]); i >= 0 {
		res.NonZeroAt = int64(i)
	} else if i := firstNonZero(tail); i >= 0 {
		res.NonZeroAt = d.tailOff + int64(i)
	}
	return res, nil
}

// headSize and tailSize are what Probe reads in one go: the zero-checked
// regions, which hold every signature but the LUKS2 secondary headers at
// 1, 2 and 4 MiB (read on their own, a few bytes each).
const (
	headSize = ZeroCheckSize
	tailSize = ZeroCheckSize
)

// wipeHeadSize is what Wipe zeroes at the start: up to and including the
// last LUKS2 secondary header offset (4 MiB) and its 4 KiB binary header.
const wipeHeadSize = 4<<20 + 4096

func readFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func firstNonZero(b []byte) int {
	// compare in 4 KiB chunks against a zero block: fast and simple
	var zero [4096]byte
	for off := 0; off < len(b); off += len(zero) {
		chunk := b[off:min(len(b), off+len(zero))]
		if !bytes.Equal(chunk, zero[:len(chunk)]) {
			for i, c := range chunk {
				if c != 0 {
					return off + i
				}
			}
		}
	}
	return -1
}

// disk gives matchers the bytes they look at.
type disk struct {
	r       io.ReaderAt // for the few spots outside head and tail
	head    []byte
	tail    []byte
	tailOff int64
	size    int64
}

// at returns n bytes at absolute offset off, or nil when not read.
func (d *disk) at(off int64, n int) []byte {
	if off >= 0 && off+int64(n) <= int64(len(d.head)) {
		return d.head[off : off+int64(n)]
	}
	if off >= d.tailOff && off+int64(n) <= d.tailOff+int64(len(d.tail)) {
		return d.tail[off-d.tailOff : off-d.tailOff+int64(n)]
	}
	if d.r != nil && off >= 0 && off+int64(n) <= d.size {
		b := make([]byte, n)
		if readFull(d.r, b, off) == nil {
			return b
		}
	}
	return nil
}

func (d *disk) has(off int64, magic string) bool {
	b := d.at(off, len(magic))
	return b != nil && string(b) == magic
}

func (d *disk) le16(off int64) (uint16, bool) {
	b := d.at(off, 2)
	if b == nil {
		return 0, false
	}
	return binary.LittleEndian.Uint16(b), true
}

func (d *disk) le32(off int64) (uint32, bool) {
	b := d.at(off, 4)
	if b == nil {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}
