package luks2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ReadHeader reads the metadata of a LUKS2 (or, read-only, LUKS1) volume.
//
// Both LUKS2 copies are read and checked (checksum over the whole copy with
// the checksum field zeroed, then the JSON); the valid copy with the higher
// seqid wins. When the primary copy is damaged the secondary is found by
// probing the offsets cryptsetup allows, FromSecondary is set and Warnings
// says why, so the caller can log it. Errors: ErrNotLUKS when there is no
// LUKS signature at all, ErrNoValidHeader when every copy is damaged.
func ReadHeader(r io.ReaderAt) (*Header, error) {
	first := make([]byte, 8)
	if n, err := r.ReadAt(first, 0); n < len(first) {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: device shorter than a LUKS header", ErrNotLUKS)
		}
		return nil, fmt.Errorf("read LUKS header: %w", err)
	}
	if bytes.Equal(first[:6], magicPrimary) && first[6] == 0 && first[7] == 1 {
		return readLUKS1(r)
	}

	var warnings []string
	primary, perr := readCopy(r, 0)
	var secondary *headerCopy
	var serr error
	if perr == nil {
		secondary, serr = readCopy(r, int64(primary.hdrSize))
	} else {
		serr = errNoMagic
		for _, off := range secondaryOffsets {
			c, err := readCopy(r, off)
			if err == nil {
				secondary, serr = c, nil
				break
			}
			// Nothing readable there (a short device) is not damage.
			if !errors.Is(err, errNoMagic) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				serr = err
			}
		}
	}
	switch {
	case perr != nil && serr != nil:
		if errors.Is(perr, errNoMagic) && errors.Is(serr, errNoMagic) {
			return nil, ErrNotLUKS
		}
		return nil, fmt.Errorf("%w: primary: %v; secondary: %v", ErrNoValidHeader, perr, serr)
	case perr != nil:
		warnings = append(warnings, fmt.Sprintf("primary LUKS2 header damaged (%v); using the secondary copy at offset %d (a write repairs it)", perr, secondary.offset))
	case serr != nil:
		warnings = append(warnings, fmt.Sprintf("secondary LUKS2 header damaged (%v); using the primary copy (a write repairs it)", serr))
	}

	use := primary
	switch {
	case primary == nil:
		use = secondary
	case secondary != nil && secondary.uuid != primary.uuid:
		// Copies of two different volumes (a stale secondary): never let
		// the foreign one win on seqid.
		warnings = append(warnings, fmt.Sprintf("secondary LUKS2 header belongs to another volume (UUID %s); using the primary", secondary.uuid))
	case secondary != nil && secondary.seqid > primary.seqid:
		use = secondary
		warnings = append(warnings, fmt.Sprintf("primary LUKS2 header is older (seqid %d) than the secondary (seqid %d), an interrupted write; using the secondary", primary.seqid, secondary.seqid))
	case secondary != nil && secondary.seqid < primary.seqid:
		warnings = append(warnings, fmt.Sprintf("secondary LUKS2 header is older (seqid %d) than the primary (seqid %d), an interrupted write; using the primary", secondary.seqid, primary.seqid))
	}
	if primary != nil && secondary != nil && primary.hdrSize != secondary.hdrSize {
		warnings = append(warnings, "LUKS2 header copies disagree on the metadata size")
	}
	h, err := headerFromMetadata(use.meta)
	if err != nil {
		return nil, err
	}
	h.Version = 2
	h.UUID, h.Label, h.Subsystem = use.uuid, use.label, use.subsystem
	h.Seqid = use.seqid
	h.MetadataSize = use.hdrSize
	h.FromSecondary = use != primary
	h.Warnings = warnings
	h.metaRaw = use.jsonText
	h.checksum = use.csumAlg
	if use.exact {
		h.meta = use.meta
	}
	return h, nil
}

func atoiList(ss []string) []int {
	out := make([]int, 0, len(ss))
	for _, s := range ss {
		n, _ := strconv.Atoi(s)
		out = append(out, n)
	}
	return out
}

// headerFromMetadata builds the public view of validated metadata.
func headerFromMetadata(m *metadata) (*Header, error) {
	h := &Header{
		KeyslotsSize: m.Config.KeyslotsSize,
		Keyslots:     map[int]Keyslot{},
		Tokens:       map[int]Token{},
		Segments:     map[int]Segment{},
		Digests:      map[int]Digest{},
		Flags:        append([]string(nil), m.Config.Flags...),
	}
	if m.Config.Requirements != nil {
		h.Requirements = append([]string(nil), m.Config.Requirements.Mandatory...)
	}
	for k, js := range m.Keyslots {
		id, _ := strconv.Atoi(k)
		ks := Keyslot{ID: id, Type: js.Type, KeySize: js.KeySize, Priority: PriorityNormal}
		if js.Priority != nil {
			ks.Priority = Priority(*js.Priority)
		}
		if js.AF != nil {
			ks.AFType, ks.AFStripes, ks.AFHash = js.AF.Type, js.AF.Stripes, js.AF.Hash
		}
		ks.Area = Area{Type: js.Area.Type, Offset: js.Area.Offset, Size: js.Area.Size, Encryption: js.Area.Encryption, KeySize: js.Area.KeySize}
		if js.KDF != nil {
			salt, err := decodeB64("kdf salt", js.KDF.Salt)
			if err != nil {
				return nil, err
			}
			ks.KDF = KDF{Type: js.KDF.Type, Hash: js.KDF.Hash, Iterations: js.KDF.Iterations, Time: js.KDF.Time, Memory: js.KDF.Memory, Parallel: js.KDF.CPUs, Salt: salt}
		}
		h.Keyslots[id] = ks
	}
	for k, raw := range m.Tokens {
		id, _ := strconv.Atoi(k)
		t, err := parseToken(raw, nil)
		if err != nil {
			return nil, err
		}
		t.ID = id
		h.Tokens[id] = t
	}
	for k, js := range m.Segments {
		id, _ := strconv.Atoi(k)
		s := Segment{ID: id, Type: js.Type, Offset: js.Offset, IVTweak: js.IVTweak, Encryption: js.Encryption,
			SectorSize: js.SectorSize, Integrity: len(js.Integrity) > 0, Flags: append([]string(nil), js.Flags...)}
		if js.Size == "dynamic" {
			s.Dynamic = true
		} else {
			s.Size, _ = strconv.ParseUint(js.Size, 10, 64)
		}
		h.Segments[id] = s
	}
	for k, jd := range m.Digests {
		id, _ := strconv.Atoi(k)
		salt, err := decodeB64("digest salt", jd.Salt)
		if err != nil {
			return nil, err
		}
		dg, err := decodeB64("digest", jd.Digest)
		if err != nil {
			return nil, err
		}
		h.Digests[id] = Digest{ID: id, Type: jd.Type, Keyslots: atoiList(jd.Keyslots), Segments: atoiList(jd.Segments),
			Hash: jd.Hash, Iterations: jd.Iterations, Salt: salt, Digest: dg}
	}
	return h, nil
}

// HasFlag reports whether a persistent flag (e.g. "allow-discards") is set.
func (h *Header) HasFlag(flag string) bool {
	for _, f := range h.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// dataSegment returns the lowest-numbered crypt segment, the one cryptsetup
// maps by default.
func (h *Header) dataSegment() (Segment, bool) {
	best, found := Segment{}, false
	for id, s := range h.Segments {
		if s.Type == "crypt" && (!found || id < best.ID) {
			best, found = s, true
		}
	}
	return best, found
}

// Mapping describes the data segment for a dm-crypt table. It fails for
// volumes this package cannot map correctly: mandatory requirements such as
// an unfinished reencryption, integrity segments, or no crypt segment.
func (h *Header) Mapping() (Mapping, error) {
	if len(h.Requirements) > 0 {
		return Mapping{}, fmt.Errorf("LUKS volume %s: %w: %v", h.UUID, ErrRequirements, h.Requirements)
	}
	s, ok := h.dataSegment()
	if !ok {
		return Mapping{}, fmt.Errorf("LUKS volume %s: no crypt data segment", h.UUID)
	}
	if s.Integrity {
		return Mapping{}, fmt.Errorf("LUKS volume %s segment %d: integrity segments: %w", h.UUID, s.ID, ErrUnsupported)
	}
	keySize := 0
	if d, ok := h.segmentDigest(s.ID); ok {
		for _, ks := range d.Keyslots {
			keySize = h.Keyslots[ks].KeySize
			break
		}
	}
	return Mapping{
		Cipher:        s.Encryption,
		KeySize:       keySize,
		Offset:        s.Offset,
		Size:          s.Size,
		Dynamic:       s.Dynamic,
		IVTweak:       s.IVTweak,
		SectorSize:    s.SectorSize,
		AllowDiscards: h.HasFlag("allow-discards"),
		Flags:         append([]string(nil), h.Flags...),
	}, nil
}

// segmentDigest is the digest bound to segment seg.
func (h *Header) segmentDigest(seg int) (Digest, bool) {
	for _, d := range h.Digests {
		for _, s := range d.Segments {
			if s == seg {
				return d, true
			}
		}
	}
	return Digest{}, false
}

// RawJSON returns the LUKS2 JSON metadata text as read (nil for LUKS1).
func (h *Header) RawJSON() []byte {
	if h.metaRaw == nil {
		return nil
	}
	return append([]byte(nil), h.metaRaw...)
}
