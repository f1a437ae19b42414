package luks2

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strconv"
)

// Layout constants of cryptsetup 2.6's default LUKS2 header.
const (
	defaultMetadataSize = 0x4000                  // one metadata copy
	keyslotsAreaStart   = 2 * defaultMetadataSize // after both copies
	defaultDataOffset   = 16 << 20                // data segment offset
	afStripes           = 4000                    // LUKS_STRIPES
	kdfSaltSize         = 32                      // LUKS_SALTSIZE
	areaAlign           = 4096                    // keyslot area alignment
	defaultAreaCipher   = "aes-xts-plain64"       // the only keyslot cipher we write
)

// DefaultKDF is the KDF Format and AddKeyslot use when given a zero KDF:
// argon2id with 4 iterations, 256 MiB and 4 lanes. cryptsetup benchmarks
// instead; a fixed cost keeps unlock predictable inside a small initramfs VM.
func DefaultKDF() KDF {
	return KDF{Type: "argon2id", Time: 4, Memory: 256 << 10, Parallel: 4}
}

// checkKDF fills defaults and rejects what cryptsetup would not write.
func checkKDF(k KDF) (KDF, error) {
	if k.Type == "" && k.Iterations == 0 && k.Time == 0 && k.Memory == 0 && k.Parallel == 0 {
		k = DefaultKDF()
	}
	switch k.Type {
	case "pbkdf2":
		if k.Hash == "" {
			k.Hash = "sha256"
		}
		if _, err := hashByName(k.Hash); err != nil {
			return k, fmt.Errorf("pbkdf2: %w", err)
		}
		if k.Iterations < 1000 {
			return k, fmt.Errorf("%w: pbkdf2 needs an explicit iteration count of at least 1000, got %d", ErrInvalidParameter, k.Iterations)
		}
	case "argon2id", "argon2i":
		if k.Hash == "" {
			k.Hash = "sha256" // used for the AF, as cryptsetup does
		}
		if _, err := hashByName(k.Hash); err != nil {
			return k, fmt.Errorf("%s AF: %w", k.Type, err)
		}
		if k.Time < 1 || k.Parallel < 1 || k.Parallel > 16 || k.Memory < 32 || k.Memory > 4<<20 {
			return k, fmt.Errorf("%w: %s needs explicit costs: time >= 1, memory 32..4194304 KiB, parallel 1..16 (got time=%d memory=%d parallel=%d)",
				ErrInvalidParameter, k.Type, k.Time, k.Memory, k.Parallel)
		}
	default:
		return k, fmt.Errorf("KDF %q: %w (supported: argon2id, argon2i, pbkdf2)", k.Type, ErrUnsupported)
	}
	k.Salt = nil
	return k, nil
}

// areaLength is the keyslot area size cryptsetup allocates for a key.
func areaLength(keyLen int) uint64 {
	n := uint64(afSectors(keyLen, afStripes))
	return (n + areaAlign - 1) / areaAlign * areaAlign
}

// findAreaGap returns the lowest offset in the keyslots area (which starts
// after both metadata copies, 2*hdrSize) where length bytes fit between
// existing areas (cryptsetup's LUKS2_find_area_gap).
func findAreaGap(m *metadata, hdrSize, length uint64) (uint64, error) {
	type iv struct{ off, end uint64 }
	var used []iv
	for _, ks := range m.Keyslots {
		used = append(used, iv{ks.Area.Offset, ks.Area.Offset + ks.Area.Size})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].off < used[j].off })
	start := 2 * hdrSize
	off := start
	for _, u := range used {
		if u.off >= off && u.off-off >= length {
			break
		}
		off = max(off, u.end)
	}
	if off+length > start+m.Config.KeyslotsSize {
		return 0, ErrNoSpace
	}
	return off, nil
}

// sealKeyslot builds keyslot JSON for volumeKey under passphrase at a free
// area and returns it with the encrypted material to write there.
func sealKeyslot(m *metadata, hdrSize uint64, volumeKey, passphrase []byte, k KDF) (*jsonKeyslot, []byte, error) {
	k, err := checkKDF(k)
	if err != nil {
		return nil, nil, err
	}
	keyLen := len(volumeKey)
	areaKeyLen := keyLen
	if keyLen != 32 && keyLen != 64 {
		areaKeyLen = 64
	}
	length := areaLength(keyLen)
	off, err := findAreaGap(m, hdrSize, length)
	if err != nil {
		return nil, nil, err
	}
	k.Salt = make([]byte, kdfSaltSize)
	if _, err := rand.Read(k.Salt); err != nil {
		return nil, nil, err
	}
	slotKey, err := deriveKey(k, passphrase, areaKeyLen)
	if err != nil {
		return nil, nil, err
	}
	c, err := newAreaCipher(defaultAreaCipher, slotKey)
	clear(slotKey)
	if err != nil {
		return nil, nil, err
	}
	split, err := afSplit(k.Hash, volumeKey, afStripes)
	if err != nil {
		return nil, nil, err
	}
	material := make([]byte, afSectors(keyLen, afStripes))
	copy(material, split)
	clear(split)
	c.encrypt(material)

	jk := &jsonKDF{Type: k.Type, Salt: base64.StdEncoding.EncodeToString(k.Salt)}
	if k.Type == "pbkdf2" {
		jk.Hash, jk.Iterations = k.Hash, k.Iterations
	} else {
		jk.Time, jk.Memory, jk.CPUs = k.Time, k.Memory, k.Parallel
	}
	ks := &jsonKeyslot{
		Type:    "luks2",
		KeySize: keyLen,
		AF:      &jsonAF{Type: "luks1", Stripes: afStripes, Hash: k.Hash},
		Area:    &jsonArea{Type: "raw", Offset: off, Size: length, Encryption: defaultAreaCipher, KeySize: areaKeyLen},
		KDF:     jk,
	}
	return ks, material, nil
}

// AddKeyslot adds passphrase as a new keyslot for volumeKey (get it with
// Header.Unlock using an existing passphrase, or from the caller). slot is
// 0..31 or AnySlot for the first free one; it returns the slot used.
// The key material goes into an unused area and is synced before either
// header copy is rewritten (see the package doc).
func AddKeyslot(dev Device, volumeKey, passphrase []byte, slot int, kdf KDF) (int, error) {
	h, m, err := loadForWrite(dev)
	if err != nil {
		return -1, fmt.Errorf("add keyslot: %w", err)
	}
	if slot == AnySlot {
		for i := 0; i < MaxKeyslots && slot == AnySlot; i++ {
			if _, ok := m.Keyslots[strconv.Itoa(i)]; !ok {
				slot = i
			}
		}
		if slot == AnySlot {
			return -1, fmt.Errorf("add keyslot to %s: %w", h.UUID, ErrNoFreeSlot)
		}
	}
	if slot < 0 || slot >= MaxKeyslots {
		return -1, fmt.Errorf("add keyslot %d to %s: %w", slot, h.UUID, ErrSlotRange)
	}
	if _, ok := m.Keyslots[strconv.Itoa(slot)]; ok {
		return -1, fmt.Errorf("add keyslot %d to %s: %w (remove it first or pick another slot)", slot, h.UUID, ErrSlotInUse)
	}
	if err := h.VerifyVolumeKey(volumeKey); err != nil {
		return -1, fmt.Errorf("add keyslot %d: %w", slot, err)
	}
	seg, _ := h.dataSegment()
	d, _ := h.segmentDigest(seg.ID)
	ks, material, err := sealKeyslot(m, h.MetadataSize, volumeKey, passphrase, kdf)
	if err != nil {
		return -1, fmt.Errorf("add keyslot %d to %s: %w", slot, h.UUID, err)
	}
	id := strconv.Itoa(slot)
	m.Keyslots[id] = ks
	jd := m.Digests[strconv.Itoa(d.ID)]
	jd.Keyslots = sortIDs(append(jd.Keyslots, id))
	u, err := prepareNext(h, m)
	if err != nil {
		return -1, fmt.Errorf("add keyslot %d to %s: %w", slot, h.UUID, err)
	}

	if _, err := dev.WriteAt(material, int64(ks.Area.Offset)); err != nil {
		return -1, fmt.Errorf("add keyslot %d to %s: write key material: %w", slot, h.UUID, err)
	}
	if err := dev.Sync(); err != nil {
		return -1, fmt.Errorf("add keyslot %d to %s: sync key material: %w", slot, h.UUID, err)
	}
	if err := u.write(dev); err != nil {
		return -1, fmt.Errorf("add keyslot %d to %s: %w", slot, h.UUID, err)
	}
	return slot, nil
}

// KillKeyslot removes a keyslot: both header copies first, then its key
// material is overwritten. It refuses to remove the last keyslot bound to
// the data segment (ErrLastKeyslot), which would lose the volume. Tokens
// that referenced the slot are unassigned from it, as cryptsetup does.
func KillKeyslot(dev Device, slot int) error {
	if slot < 0 || slot >= MaxKeyslots {
		return fmt.Errorf("remove keyslot %d: %w", slot, ErrSlotRange)
	}
	h, m, err := loadForWrite(dev)
	if err != nil {
		return fmt.Errorf("remove keyslot %d: %w", slot, err)
	}
	id := strconv.Itoa(slot)
	ks, ok := m.Keyslots[id]
	if !ok {
		return fmt.Errorf("remove keyslot %d from %s: %w", slot, h.UUID, ErrSlotNotFound)
	}
	seg, _ := h.dataSegment()
	if d, ok := h.segmentDigest(seg.ID); ok && slices.Contains(d.Keyslots, slot) && len(d.Keyslots) == 1 {
		return fmt.Errorf("remove keyslot %d from %s: %w (add another key first)", slot, h.UUID, ErrLastKeyslot)
	}
	delete(m.Keyslots, id)
	for did, d := range m.Digests {
		d.Keyslots = slices.DeleteFunc(d.Keyslots, func(s string) bool { return s == id })
		if len(d.Keyslots) == 0 {
			delete(m.Digests, did) // as cryptsetup does, e.g. for an unbound key's digest
		}
	}
	for tid, raw := range m.Tokens {
		nr, err := tokenWithoutSlot(raw, id)
		if err != nil {
			return fmt.Errorf("remove keyslot %d from %s: token %s: %w", slot, h.UUID, tid, err)
		}
		m.Tokens[tid] = nr
	}
	if err := commitNext(dev, h, m); err != nil {
		return fmt.Errorf("remove keyslot %d from %s: %w", slot, h.UUID, err)
	}
	if err := wipeArea(dev, ks.Area.Offset, ks.Area.Size); err != nil {
		return fmt.Errorf("remove keyslot %d from %s (headers already updated): %w", slot, h.UUID, err)
	}
	return nil
}

func sortIDs(ids []string) []string {
	sort.Slice(ids, func(i, j int) bool {
		a, _ := strconv.Atoi(ids[i])
		b, _ := strconv.Atoi(ids[j])
		return a < b
	})
	return ids
}

// ReplaceKeyslot re-keys an existing keyslot in one step: passphrase (with
// kdf) replaces whatever opened slot before, for the same volumeKey. Unlike
// KillKeyslot followed by AddKeyslot it works on the last keyslot, and a
// crash leaves either the old or the new passphrase working: the new key
// material goes to a free area first, then both header copies switch the
// slot to it, and only then is the old area wiped. Tokens and the slot's
// priority are kept.
func ReplaceKeyslot(dev Device, volumeKey, passphrase []byte, slot int, kdf KDF) error {
	if slot < 0 || slot >= MaxKeyslots {
		return fmt.Errorf("replace keyslot %d: %w", slot, ErrSlotRange)
	}
	h, m, err := loadForWrite(dev)
	if err != nil {
		return fmt.Errorf("replace keyslot %d: %w", slot, err)
	}
	id := strconv.Itoa(slot)
	old, ok := m.Keyslots[id]
	if !ok {
		return fmt.Errorf("replace keyslot %d in %s: %w", slot, h.UUID, ErrSlotNotFound)
	}
	if err := h.VerifyVolumeKey(volumeKey); err != nil {
		return fmt.Errorf("replace keyslot %d: %w", slot, err)
	}
	ks, material, err := sealKeyslot(m, h.MetadataSize, volumeKey, passphrase, kdf)
	if err != nil {
		return fmt.Errorf("replace keyslot %d in %s: %w", slot, h.UUID, err)
	}
	ks.Priority = old.Priority
	m.Keyslots[id] = ks
	u, err := prepareNext(h, m)
	if err != nil {
		return fmt.Errorf("replace keyslot %d in %s: %w", slot, h.UUID, err)
	}
	if _, err := dev.WriteAt(material, int64(ks.Area.Offset)); err != nil {
		return fmt.Errorf("replace keyslot %d in %s: write key material: %w", slot, h.UUID, err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("replace keyslot %d in %s: sync key material: %w", slot, h.UUID, err)
	}
	if err := u.write(dev); err != nil {
		return fmt.Errorf("replace keyslot %d in %s: %w", slot, h.UUID, err)
	}
	if err := wipeArea(dev, old.Area.Offset, old.Area.Size); err != nil {
		return fmt.Errorf("replace keyslot %d in %s (headers already updated): %w", slot, h.UUID, err)
	}
	return nil
}
