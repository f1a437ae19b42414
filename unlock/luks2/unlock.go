package luks2

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Unlock derives the volume key from passphrase. With slot == AnySlot it
// tries, like cryptsetup, every keyslot bound to the data segment: preferred
// ones first, then normal ones, each group in slot order, skipping slots with
// priority "ignore". It returns the volume key (the caller zeroes it) and the
// slot that opened. ErrNoKeyslotOpens when no slot accepts the passphrase.
func (h *Header) Unlock(r io.ReaderAt, passphrase []byte, slot int) ([]byte, int, error) {
	seg, ok := h.dataSegment()
	if !ok {
		return nil, -1, fmt.Errorf("unlock LUKS volume %s: no crypt data segment", h.UUID)
	}
	if slot != AnySlot {
		if slot < 0 || slot >= MaxKeyslots {
			return nil, -1, fmt.Errorf("unlock LUKS volume %s slot %d: %w", h.UUID, slot, ErrSlotRange)
		}
		if _, ok := h.Keyslots[slot]; !ok {
			return nil, -1, fmt.Errorf("unlock LUKS volume %s slot %d: %w", h.UUID, slot, ErrSlotNotFound)
		}
		key, err := h.openSlot(r, passphrase, slot, seg.ID)
		if err != nil {
			return nil, -1, fmt.Errorf("unlock LUKS volume %s slot %d: %w", h.UUID, slot, err)
		}
		return key, slot, nil
	}
	order := h.unlockOrder()
	var unusual error
	for _, id := range order {
		key, err := h.openSlot(r, passphrase, id, seg.ID)
		if err == nil {
			return key, id, nil
		}
		if !errors.Is(err, ErrNoKeyslotOpens) && unusual == nil {
			unusual = fmt.Errorf("slot %d: %w", id, err)
		}
	}
	if unusual != nil {
		return nil, -1, fmt.Errorf("unlock LUKS volume %s, tried slots %v: %w (also: %v)", h.UUID, order, ErrNoKeyslotOpens, unusual)
	}
	return nil, -1, fmt.Errorf("unlock LUKS volume %s, tried slots %v: %w", h.UUID, order, ErrNoKeyslotOpens)
}

// unlockOrder lists the keyslots Unlock tries with AnySlot: preferred ones
// first, then normal ones, each group in slot order; "ignore" ones never.
func (h *Header) unlockOrder() []int {
	var order []int
	for _, prio := range []Priority{PriorityPrefer, PriorityNormal} {
		var ids []int
		for id, ks := range h.Keyslots {
			if ks.Priority == prio {
				ids = append(ids, id)
			}
		}
		sort.Ints(ids)
		order = append(order, ids...)
	}
	return order
}

// digestForSlot is the digest that binds keyslot id to segment seg.
func (h *Header) digestForSlot(id, seg int) (Digest, bool) {
	for _, d := range h.Digests {
		hasSlot, hasSeg := false, false
		for _, k := range d.Keyslots {
			hasSlot = hasSlot || k == id
		}
		for _, s := range d.Segments {
			hasSeg = hasSeg || s == seg
		}
		if hasSlot && hasSeg {
			return d, true
		}
	}
	return Digest{}, false
}

// openSlot returns the volume key held in keyslot id, or ErrNoKeyslotOpens.
func (h *Header) openSlot(r io.ReaderAt, passphrase []byte, id, seg int) ([]byte, error) {
	ks := h.Keyslots[id]
	if ks.Type != "luks2" && ks.Type != "luks1" {
		return nil, fmt.Errorf("keyslot type %q: %w", ks.Type, ErrUnsupported)
	}
	if ks.AFType != "luks1" {
		return nil, fmt.Errorf("AF type %q: %w", ks.AFType, ErrUnsupported)
	}
	d, ok := h.digestForSlot(id, seg)
	if !ok {
		return nil, fmt.Errorf("keyslot is not bound to the data segment (unbound key): %w", ErrNoKeyslotOpens)
	}
	n := afSectors(ks.KeySize, ks.AFStripes)
	if ks.Area.Size != 0 && uint64(n) > ks.Area.Size {
		return nil, fmt.Errorf("keyslot area of %d bytes is smaller than its key material", ks.Area.Size)
	}
	// Check the cipher before running an expensive KDF.
	if _, err := newAreaCipher(ks.Area.Encryption, make([]byte, ks.Area.KeySize)); err != nil {
		return nil, err
	}
	material := make([]byte, n)
	defer clear(material)
	if _, err := r.ReadAt(material, int64(ks.Area.Offset)); err != nil {
		return nil, fmt.Errorf("read keyslot area at %d: %w", ks.Area.Offset, err)
	}
	slotKey, err := deriveKey(ks.KDF, passphrase, ks.Area.KeySize)
	if err != nil {
		return nil, err
	}
	c, err := newAreaCipher(ks.Area.Encryption, slotKey)
	clear(slotKey)
	if err != nil {
		return nil, err
	}
	c.decrypt(material)
	key, err := afMerge(ks.AFHash, material, ks.KeySize, ks.AFStripes)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(d, key); err != nil {
		clear(key)
		return nil, err
	}
	return key, nil
}

// checkDigest compares key against a pbkdf2 digest in constant time.
func checkDigest(d Digest, key []byte) error {
	if d.Type != "pbkdf2" {
		return fmt.Errorf("digest type %q: %w", d.Type, ErrUnsupported)
	}
	newHash, err := hashByName(d.Hash)
	if err != nil {
		return err
	}
	got := pbkdf2Key(newHash, key, d.Salt, d.Iterations, len(d.Digest))
	defer clear(got)
	if subtle.ConstantTimeCompare(got, d.Digest) != 1 {
		return ErrNoKeyslotOpens
	}
	return nil
}

// VerifyVolumeKey checks key against the digest of the data segment.
// ErrWrongVolumeKey when it does not match.
func (h *Header) VerifyVolumeKey(key []byte) error {
	seg, ok := h.dataSegment()
	if !ok {
		return fmt.Errorf("verify volume key of %s: no crypt data segment", h.UUID)
	}
	d, ok := h.segmentDigest(seg.ID)
	if !ok {
		return fmt.Errorf("verify volume key of %s: no digest for segment %d", h.UUID, seg.ID)
	}
	if err := checkDigest(d, key); err != nil {
		if errors.Is(err, ErrNoKeyslotOpens) {
			return fmt.Errorf("verify volume key of %s: %w", h.UUID, ErrWrongVolumeKey)
		}
		return fmt.Errorf("verify volume key of %s: %w", h.UUID, err)
	}
	return nil
}
