package luks2

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/cryptinit/cryptinit/unlock/probe"
)

// FormatOptions are the choices for Format. The zero value formats like
// cryptsetup 2.6 on an image file: aes-xts-plain64, 512-bit key, 4096-byte
// sectors, first key in slot 0, with DefaultKDF.
type FormatOptions struct {
	Slot       int    // keyslot for the first passphrase, 0..31
	Cipher     string // data cipher; only "aes-xts-plain64" (the default)
	KeySize    int    // volume key size in bits: 256 or 512 (default 512)
	SectorSize int    // encryption sector size: 512, 1024, 2048 or 4096 (default 4096)
	KDF        KDF    // keyslot KDF with explicit costs; zero value = DefaultKDF()
	Label      string // optional, < 48 bytes
	Subsystem  string // optional, < 48 bytes
	UUID       string // optional; a random version 4 UUID when empty
	VolumeKey  []byte // optional caller-provided volume key (KeySize/8 bytes); random otherwise
	// DigestIterations is the pbkdf2 iteration count of the volume key
	// digest (default 100000; at least 1000 as cryptsetup requires).
	DigestIterations int
	Flags            []string // persistent activation flags, e.g. "allow-discards"
}

// Format writes a new LUKS2 header with one keyslot holding passphrase and
// returns the header as read back. deviceSize is the size of dev in bytes; it
// must hold the 16 MiB header area. Format refuses a device that already
// carries a LUKS or filesystem signature (ErrHasSignature).
//
// Order: the keyslots area is filled with random bytes (as cryptsetup does)
// and the key material written, Sync; then the secondary copy, then the
// primary one, each as JSON area, Sync, binary header, Sync. A crash leaves
// no LUKS signature at all or a complete volume (see the package doc).
func Format(dev Device, deviceSize int64, passphrase []byte, opts FormatOptions) (*Header, error) {
	if err := checkFormatOptions(&opts); err != nil {
		return nil, fmt.Errorf("format LUKS2: %w", err)
	}
	if deviceSize < defaultDataOffset {
		return nil, fmt.Errorf("format LUKS2: %w: %d bytes, need at least %d", ErrDeviceTooSmall, deviceSize, defaultDataOffset)
	}
	found, err := probe.Probe(dev, deviceSize)
	if err != nil {
		return nil, fmt.Errorf("format LUKS2: %w", err)
	}
	if len(found.Signatures) > 0 {
		return nil, fmt.Errorf("format LUKS2: %w: found %s (wipe it first if you really mean it)", ErrHasSignature, found.Describe())
	}
	keyLen := opts.KeySize / 8
	vk := make([]byte, keyLen)
	defer clear(vk)
	if opts.VolumeKey != nil {
		copy(vk, opts.VolumeKey)
	} else if _, err := rand.Read(vk); err != nil {
		return nil, err
	}
	if opts.UUID == "" {
		opts.UUID = newUUID()
	}

	digestSalt := make([]byte, kdfSaltSize)
	if _, err := rand.Read(digestSalt); err != nil {
		return nil, err
	}
	digest := pbkdf2Key(mustHash("sha256"), vk, digestSalt, opts.DigestIterations, 32)
	m := &metadata{
		Keyslots: map[string]*jsonKeyslot{},
		Tokens:   map[string]json.RawMessage{},
		Segments: map[string]*jsonSegment{"0": {
			Type: "crypt", Offset: defaultDataOffset, Size: "dynamic", Encryption: opts.Cipher, SectorSize: opts.SectorSize,
		}},
		Config: jsonConfig{
			JSONSize:     defaultMetadataSize - binHeaderSize,
			KeyslotsSize: defaultDataOffset - keyslotsAreaStart,
			Flags:        append([]string(nil), opts.Flags...),
		},
	}
	ks, material, err := sealKeyslot(m, defaultMetadataSize, vk, passphrase, opts.KDF)
	if err != nil {
		return nil, fmt.Errorf("format LUKS2 keyslot %d: %w", opts.Slot, err)
	}
	slot := strconv.Itoa(opts.Slot)
	m.Keyslots[slot] = ks
	kdfHash := ks.AF.Hash
	if kdfHash != "sha256" { // the digest uses the KDF's hash, as cryptsetup does
		clear(digest)
		digest = pbkdf2Key(mustHash(kdfHash), vk, digestSalt, opts.DigestIterations, mustHash(kdfHash)().Size())
	}
	m.Digests = map[string]*jsonDigest{"0": {
		Type: "pbkdf2", Keyslots: []string{slot}, Segments: []string{"0"}, Hash: kdfHash,
		Iterations: opts.DigestIterations,
		Salt:       base64.StdEncoding.EncodeToString(digestSalt),
		Digest:     base64.StdEncoding.EncodeToString(digest),
	}}

	u, err := prepare(defaultMetadataSize, 1, opts.UUID, opts.Label, opts.Subsystem, m)
	if err != nil {
		return nil, fmt.Errorf("format LUKS2: %w", err)
	}
	if err := wipeArea(dev, keyslotsAreaStart, m.Config.KeyslotsSize); err != nil {
		return nil, fmt.Errorf("format LUKS2: %w", err)
	}
	if _, err := dev.WriteAt(material, int64(ks.Area.Offset)); err != nil {
		return nil, fmt.Errorf("format LUKS2: write key material: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("format LUKS2: sync key material: %w", err)
	}
	if err := u.write(dev); err != nil {
		return nil, fmt.Errorf("format LUKS2: %w", err)
	}
	h, err := ReadHeader(dev)
	if err != nil {
		return nil, fmt.Errorf("format LUKS2: read back: %w", err)
	}
	return h, nil
}

func mustHash(name string) func() hashT {
	h, err := hashByName(name)
	if err != nil {
		panic(err)
	}
	return h
}

func checkFormatOptions(o *FormatOptions) error {
	if o.Slot < 0 || o.Slot >= MaxKeyslots {
		return fmt.Errorf("keyslot %d: %w", o.Slot, ErrSlotRange)
	}
	if o.Cipher == "" {
		o.Cipher = "aes-xts-plain64"
	}
	if o.Cipher != "aes-xts-plain64" {
		return fmt.Errorf("cipher %q: %w (supported: aes-xts-plain64)", o.Cipher, ErrUnsupported)
	}
	if o.KeySize == 0 {
		o.KeySize = 512
	}
	if o.KeySize != 256 && o.KeySize != 512 {
		return fmt.Errorf("%w: key size %d bits (aes-xts-plain64 takes 256 or 512)", ErrInvalidParameter, o.KeySize)
	}
	if o.SectorSize == 0 {
		o.SectorSize = 4096
	}
	switch o.SectorSize {
	case 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("%w: sector size %d (512, 1024, 2048 or 4096)", ErrInvalidParameter, o.SectorSize)
	}
	if o.VolumeKey != nil && len(o.VolumeKey) != o.KeySize/8 {
		return fmt.Errorf("%w: volume key has %d bits, key size is %d", ErrInvalidParameter, len(o.VolumeKey)*8, o.KeySize)
	}
	if len(o.Label) >= lenLabel || len(o.Subsystem) >= lenSubsystem {
		return fmt.Errorf("%w: label and subsystem must be shorter than %d bytes", ErrInvalidParameter, lenLabel)
	}
	if o.UUID != "" && !validUUID(o.UUID) {
		return fmt.Errorf("%w: UUID %q", ErrInvalidParameter, o.UUID)
	}
	if o.DigestIterations == 0 {
		o.DigestIterations = 100000
	}
	if o.DigestIterations < 1000 {
		return fmt.Errorf("%w: digest iterations %d (at least 1000)", ErrInvalidParameter, o.DigestIterations)
	}
	for _, f := range o.Flags {
		if !slices.Contains(knownFlags, f) {
			return fmt.Errorf("flag %q: %w", f, ErrUnsupported)
		}
	}
	return nil
}

func newUUID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic(err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
