package luks2

import (
	"encoding/json"
	"errors"
	"io"
)

// Device is what the write paths need: an *os.File satisfies it.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

const (
	// AnySlot asks Unlock to try every usable keyslot and AddKeyslot to pick
	// the first free one.
	AnySlot = -1
	// AnyToken asks ImportToken to pick the first free token id.
	AnyToken = -1
	// MaxKeyslots is the number of LUKS2 keyslots (ids 0..31).
	MaxKeyslots = 32
	// MaxTokens is the number of LUKS2 tokens (ids 0..31).
	MaxTokens = 32
)

// Sentinel errors callers decide on; wrapped with context by this package.
var (
	ErrNotLUKS          = errors.New("not a LUKS device (no LUKS signature)")
	ErrNoValidHeader    = errors.New("no valid LUKS2 header copy (primary and secondary both damaged)")
	ErrLUKS1ReadOnly    = errors.New("LUKS1: read-only, writing LUKS1 headers is unsupported (convert with cryptsetup convert --type luks2)")
	ErrNoKeyslotOpens   = errors.New("no keyslot opens with this key")
	ErrWrongVolumeKey   = errors.New("volume key does not match the header digest")
	ErrSlotRange        = errors.New("keyslot out of range 0..31")
	ErrSlotInUse        = errors.New("keyslot already in use")
	ErrSlotNotFound     = errors.New("keyslot not in use")
	ErrNoFreeSlot       = errors.New("no free keyslot")
	ErrLastKeyslot      = errors.New("refusing to remove the last keyslot that opens the volume")
	ErrTokenRange       = errors.New("token id out of range 0..31")
	ErrTokenInUse       = errors.New("token id already in use (use replace)")
	ErrTokenNotFound    = errors.New("token not found")
	ErrBadToken         = errors.New("invalid token JSON")
	ErrUnsupported      = errors.New("unsupported")
	ErrUnknownMetadata  = errors.New("header holds metadata this package does not understand; refusing to rewrite it")
	ErrRequirements     = errors.New("header has mandatory requirements this package does not implement")
	ErrDeviceTooSmall   = errors.New("device too small for a LUKS2 header and data")
	ErrHasSignature     = errors.New("device already holds a signature; refusing to format it")
	ErrNoSpace          = errors.New("no free space in the keyslots area")
	ErrInvalidParameter = errors.New("invalid parameter")
)

// Priority is a keyslot priority, as cryptsetup's --priority.
type Priority int

// Keyslot priorities; Unlock with AnySlot skips PriorityIgnore and tries
// PriorityPrefer slots first.
const (
	PriorityIgnore Priority = 0
	PriorityNormal Priority = 1
	PriorityPrefer Priority = 2
)

func (p Priority) String() string {
	switch p {
	case PriorityIgnore:
		return "ignored"
	case PriorityNormal:
		return "normal"
	case PriorityPrefer:
		return "preferred"
	}
	return "unknown"
}

// KDF names a key derivation function and its explicit costs.
type KDF struct {
	Type       string // "argon2id", "argon2i" or "pbkdf2"
	Hash       string // pbkdf2 hash ("sha256", "sha512", ...); also the AF hash
	Iterations int    // pbkdf2 iterations
	Time       int    // argon2 iterations ("time")
	Memory     int    // argon2 memory in KiB
	Parallel   int    // argon2 lanes/threads ("cpus")
	Salt       []byte // read only; Format and AddKeyslot make a fresh salt
}

// Area is where a keyslot's encrypted, anti-forensic split key lives.
type Area struct {
	Type       string // "raw"
	Offset     uint64 // bytes from the start of the device
	Size       uint64 // bytes
	Encryption string // e.g. "aes-xts-plain64"
	KeySize    int    // bytes
}

// Keyslot is one LUKS keyslot.
type Keyslot struct {
	ID        int
	Type      string // "luks2"
	KeySize   int    // volume key size in bytes
	Priority  Priority
	KDF       KDF
	AFType    string // "luks1"
	AFStripes int
	AFHash    string
	Area      Area
}

// Segment is a LUKS2 data segment.
type Segment struct {
	ID         int
	Type       string // "crypt"
	Offset     uint64 // bytes
	Size       uint64 // bytes; 0 when Dynamic
	Dynamic    bool   // size "dynamic": up to the end of the device
	IVTweak    uint64
	Encryption string
	SectorSize int
	Integrity  bool // dm-integrity segment (unsupported for mapping)
	Flags      []string
}

// Digest binds keyslots to segments and verifies a volume key.
type Digest struct {
	ID         int
	Type       string // "pbkdf2"
	Keyslots   []int
	Segments   []int
	Hash       string
	Iterations int
	Salt       []byte
	Digest     []byte
}

// Token is a LUKS2 token; Raw keeps its JSON exactly as stored (compacted).
type Token struct {
	ID       int
	Type     string
	Keyslots []int
	Raw      json.RawMessage
}

// Header is the parsed metadata of a LUKS volume (LUKS2, or LUKS1 read-only).
type Header struct {
	Version      int // 2, or 1 for a LUKS1 volume (read-only)
	UUID         string
	Label        string
	Subsystem    string
	Seqid        uint64
	MetadataSize uint64 // size of one metadata copy (binary header + JSON)
	KeyslotsSize uint64
	// FromSecondary is true when the metadata came from the secondary copy
	// (primary damaged, or older after an interrupted write).
	FromSecondary bool
	// Warnings describe damaged or stale copies; safe to log, never secret.
	Warnings     []string
	Keyslots     map[int]Keyslot
	Tokens       map[int]Token
	Segments     map[int]Segment
	Digests      map[int]Digest
	Flags        []string // persistent activation flags (config.flags)
	Requirements []string // config.requirements.mandatory

	meta     *metadata // LUKS2 only: what writes start from
	metaRaw  []byte    // the JSON text as read
	checksum string    // binary header checksum algorithm
}

// Mapping is what a dm-crypt table needs for the volume's data segment:
//
//	0 <size/512> crypt <Cipher> <hex key> <IVTweak> <dev> <Offset/512> [n] [allow_discards] [sector_size:<SectorSize>]
//
// As cryptsetup does for LUKS2, the IV counts 512-byte sectors even when
// SectorSize is 4096: do not add iv_large_sectors (TestDataSegmentIV proves
// this on data cryptsetup encrypted).
type Mapping struct {
	Cipher        string // dm-crypt cipher spec, e.g. "aes-xts-plain64"
	KeySize       int    // bytes
	Offset        uint64 // bytes from the start of the device
	Size          uint64 // bytes; 0 with Dynamic
	Dynamic       bool   // the segment runs to the end of the device
	IVTweak       uint64 // dm-crypt's iv_offset, in 512-byte sectors
	SectorSize    int    // encryption sector size in bytes
	AllowDiscards bool
	Flags         []string // all persistent flags (allow-discards, same-cpu-crypt, ...)
}
