// Package meta reads and writes the Talos META partition ("ADV"): a 1 MiB
// partition holding two identical 256 KiB copies of a tagged key-value list,
// each with magics and a SHA-256 checksum. Readers take the first good copy;
// writers write and sync one copy after the other, so a torn write leaves
// one readable copy.
package meta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Layout of the META partition.
const (
	Size     = 1 << 20   // the META partition size
	CopySize = 256 << 10 // one copy; copies sit at 0 and CopySize

	magic1 = 0x5A4B3C2D
	magic2 = 0xA5B4C3D2

	headerSize   = 4                      // magic1
	trailerSize  = sha256.Size + 4        // checksum, magic2
	recordHeader = 8                      // tag u32, length u32
	dataEnd      = CopySize - trailerSize // records end here
)

// Tags used by Talos. Talos reads every tag as a uint8 (a tag of 256 or more
// would alias one of its own), assigns 6-18, and leaves 12-14 to its users.
const (
	TagUpgrade                     = 6
	TagStagedUpgradeImageRef       = 7
	TagStagedUpgradeInstallOptions = 8
	TagStateEncryptionConfig       = 9
	TagMetalNetworkPlatformConfig  = 10
	TagDownloadURLCode             = 11
	TagUserReserved1               = 12
	TagUserReserved2               = 13
	TagUserReserved3               = 14
	TagUUIDOverride                = 15
	TagUniqueMachineToken          = 16
	TagDiskImageBootloader         = 17
	TagStagedWipeSelectors         = 18
)

// cryptinit's own records: in the uint8 range Talos reads, well away from
// the tags it assigns (0-32) and from its users' 12-14.
const (
	// TagWipeRequest is cryptinit's one-shot "wipe these volumes at next
	// boot" request.
	TagWipeRequest = 0xC1
	// TagFormatJournal is cryptinit's record of formats in progress.
	TagFormatJournal = 0xC2

	// TagLegacyWipeRequest and TagLegacyFormatPending are where cryptinit
	// kept these records before it moved them out of the users' tags.
	TagLegacyWipeRequest   = TagUserReserved1
	TagLegacyFormatPending = TagUserReserved2
)

// TagName returns a short name for a known tag, or "".
func TagName(tag uint32) string {
	return map[uint32]string{
		TagUpgrade: "Upgrade", TagStagedUpgradeImageRef: "StagedUpgradeImageRef",
		TagStagedUpgradeInstallOptions: "StagedUpgradeInstallOptions",
		TagStateEncryptionConfig:       "StateEncryptionConfig", TagMetalNetworkPlatformConfig: "MetalNetworkPlatformConfig",
		TagDownloadURLCode: "DownloadURLCode", TagUserReserved1: "UserReserved1 (user's)",
		TagUserReserved2: "UserReserved2 (user's)", TagUserReserved3: "UserReserved3 (user's)",
		TagUUIDOverride: "UUIDOverride", TagUniqueMachineToken: "UniqueMachineToken",
		TagDiskImageBootloader: "DiskImageBootloader", TagStagedWipeSelectors: "StagedWipeSelectors",
		TagWipeRequest: "cryptinit WipeRequest", TagFormatJournal: "cryptinit FormatJournal",
	}[tag]
}

// Errors callers decide on.
var (
	// ErrBlank: neither copy carries the META magic (a fresh, zeroed partition).
	ErrBlank = errors.New("META holds no data (both copies blank)")
	// ErrCorrupt: both copies are damaged.
	ErrCorrupt = errors.New("META is corrupt (both copies bad)")
	// ErrFull: the tags do not fit in one copy.
	ErrFull = errors.New("META is full")
)

// Meta is the decoded tag list.
type Meta struct {
	tags map[uint32][]byte
	// Copy tells which copy was read: 1, 2, or 0 for a new Meta.
	Copy int
	// FirstCopyErr is why copy 1 was not used when Copy is 2.
	FirstCopyErr error
}

// New returns an empty Meta.
func New() *Meta { return &Meta{tags: map[uint32][]byte{}} }

// Get returns a tag's value and whether it is set.
func (m *Meta) Get(tag uint32) ([]byte, bool) {
	v, ok := m.tags[tag]
	return v, ok
}

// Set stores a tag's value (a copy of it).
func (m *Meta) Set(tag uint32, value []byte) {
	m.tags[tag] = bytes.Clone(value)
}

// Delete removes a tag and reports whether it was set.
func (m *Meta) Delete(tag uint32) bool {
	_, ok := m.tags[tag]
	delete(m.tags, tag)
	return ok
}

// Tags returns the set tags in ascending order.
func (m *Meta) Tags() []uint32 {
	tags := make([]uint32, 0, len(m.tags))
	for t := range m.tags {
		tags = append(tags, t)
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })
	return tags
}

// Read reads META from r (the partition), trying copy 1 then copy 2.
func Read(r io.ReaderAt) (*Meta, error) {
	var errs [2]error
	blank := 0
	for i := 0; i < 2; i++ {
		buf := make([]byte, CopySize)
		if _, err := r.ReadAt(buf, int64(i)*CopySize); err != nil {
			errs[i] = fmt.Errorf("read: %w", err)
			continue
		}
		m, err := Unmarshal(buf)
		if err == nil {
			m.Copy = i + 1
			if i == 1 {
				m.FirstCopyErr = errs[0]
			}
			return m, nil
		}
		if errors.Is(err, ErrBlank) {
			blank++
		}
		errs[i] = err
	}
	if blank == 2 {
		return nil, ErrBlank
	}
	return nil, fmt.Errorf("%w: copy 1: %v; copy 2: %v", ErrCorrupt, errs[0], errs[1])
}

// Write writes both copies of m to w: copy 1, then copy 2. When w can Sync
// (a partition, a file), each copy is synced before the next write starts,
// so a crash or power loss at any point leaves at most one copy torn and the
// other whole (the old content while copy 1 is written, the new one after),
// and Read finds it. Without the sync between, the device may hold both
// writes in its cache and tear both.
func (m *Meta) Write(w io.WriterAt) error {
	buf, err := m.Marshal()
	if err != nil {
		return err
	}
	s, canSync := w.(interface{ Sync() error })
	for i := int64(0); i < 2; i++ {
		if _, err := w.WriteAt(buf, i*CopySize); err != nil {
			return fmt.Errorf("write META copy %d: %w", i+1, err)
		}
		if canSync {
			if err := s.Sync(); err != nil {
				return fmt.Errorf("sync META copy %d: %w", i+1, err)
			}
		}
	}
	return nil
}

// Unmarshal decodes one 256 KiB copy.
func Unmarshal(buf []byte) (*Meta, error) {
	if len(buf) != CopySize {
		return nil, fmt.Errorf("META copy is %d bytes, want %d", len(buf), CopySize)
	}
	if binary.BigEndian.Uint32(buf) != magic1 {
		if allZero(buf) {
			return nil, ErrBlank
		}
		return nil, fmt.Errorf("bad magic %#x at start", binary.BigEndian.Uint32(buf))
	}
	if binary.BigEndian.Uint32(buf[CopySize-4:]) != magic2 {
		return nil, fmt.Errorf("bad magic %#x at end", binary.BigEndian.Uint32(buf[CopySize-4:]))
	}
	if got, want := checksum(buf), buf[CopySize-trailerSize:CopySize-4]; !bytes.Equal(got[:], want) {
		return nil, errors.New("checksum mismatch")
	}
	m := New()
	for off := headerSize; ; {
		if off+recordHeader > dataEnd {
			return nil, errors.New("tag list runs into the checksum")
		}
		tag := binary.BigEndian.Uint32(buf[off:])
		if tag == 0 {
			return m, nil
		}
		n := binary.BigEndian.Uint32(buf[off+4:])
		off += recordHeader
		if uint64(n) > uint64(dataEnd-off) {
			return nil, fmt.Errorf("tag %d: length %d runs past the data area", tag, n)
		}
		if _, dup := m.tags[tag]; dup {
			return nil, fmt.Errorf("tag %d appears twice", tag)
		}
		m.tags[tag] = bytes.Clone(buf[off : off+int(n)])
		off += int(n)
	}
}

// Marshal encodes one 256 KiB copy.
func (m *Meta) Marshal() ([]byte, error) {
	buf := make([]byte, CopySize)
	binary.BigEndian.PutUint32(buf, magic1)
	off := headerSize
	for _, tag := range m.Tags() {
		if tag == 0 {
			return nil, errors.New("META tag 0 is reserved (it ends the list)")
		}
		v := m.tags[tag]
		// leave room for this record and the terminating zero tag
		if off+recordHeader+len(v)+recordHeader > dataEnd {
			return nil, fmt.Errorf("%w: tag %d (%d bytes) does not fit; delete tags no longer needed (cryptctl meta delete --tag N)", ErrFull, tag, len(v))
		}
		binary.BigEndian.PutUint32(buf[off:], tag)
		binary.BigEndian.PutUint32(buf[off+4:], uint32(len(v)))
		copy(buf[off+recordHeader:], v)
		off += recordHeader + len(v)
	}
	binary.BigEndian.PutUint32(buf[CopySize-4:], magic2)
	sum := checksum(buf)
	copy(buf[CopySize-trailerSize:], sum[:])
	return buf, nil
}

// checksum is SHA-256 of the copy with the checksum field zeroed.
func checksum(buf []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(buf[:CopySize-trailerSize])
	h.Write(make([]byte, sha256.Size))
	h.Write(buf[CopySize-4:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
