package luks2

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
)

// maxKeyslotsSize is cryptsetup's limit on the keyslots area (and so on any
// key material we read).
const maxKeyslotsSize = 128 << 20

// metadata is the LUKS2 JSON area. Field order follows cryptsetup's output.
type metadata struct {
	Keyslots map[string]*jsonKeyslot    `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
	Segments map[string]*jsonSegment    `json:"segments"`
	Digests  map[string]*jsonDigest     `json:"digests"`
	Config   jsonConfig                 `json:"config"`
}

type jsonKeyslot struct {
	Type     string    `json:"type"`
	KeySize  int       `json:"key_size"`
	AF       *jsonAF   `json:"af,omitempty"`
	Area     *jsonArea `json:"area"`
	KDF      *jsonKDF  `json:"kdf,omitempty"`
	Priority *int      `json:"priority,omitempty"`
}

type jsonAF struct {
	Type    string `json:"type"`
	Stripes int    `json:"stripes"`
	Hash    string `json:"hash"`
}

type jsonArea struct {
	Type       string `json:"type"`
	Offset     uint64 `json:"offset,string"`
	Size       uint64 `json:"size,string"`
	Encryption string `json:"encryption,omitempty"`
	KeySize    int    `json:"key_size,omitempty"`
}

type jsonKDF struct {
	Type       string `json:"type"`
	Hash       string `json:"hash,omitempty"`
	Iterations int    `json:"iterations,omitempty"`
	Time       int    `json:"time,omitempty"`
	Memory     int    `json:"memory,omitempty"`
	CPUs       int    `json:"cpus,omitempty"`
	Salt       string `json:"salt"`
}

type jsonSegment struct {
	Type       string          `json:"type"`
	Offset     uint64          `json:"offset,string"`
	Size       string          `json:"size"`
	IVTweak    uint64          `json:"iv_tweak,string"`
	Encryption string          `json:"encryption"`
	SectorSize int             `json:"sector_size"`
	Integrity  json.RawMessage `json:"integrity,omitempty"`
	Flags      []string        `json:"flags,omitempty"`
}

type jsonDigest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

type jsonConfig struct {
	JSONSize     uint64            `json:"json_size,string"`
	KeyslotsSize uint64            `json:"keyslots_size,string"`
	Flags        []string          `json:"flags,omitempty"`
	Requirements *jsonRequirements `json:"requirements,omitempty"`
}

type jsonRequirements struct {
	Mandatory []string `json:"mandatory,omitempty"`
}

// parseMetadata decodes and checks the JSON area text (without NUL padding).
// It also reports whether re-encoding the typed form reproduces every field
// (exact == false means a write would lose something).
func parseMetadata(text []byte) (m *metadata, exact bool, err error) {
	// encoding/json matches field names case-insensitively, json-c (and so
	// cryptsetup) does not: insist on the exact top-level names.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(text, &top); err != nil {
		return nil, false, fmt.Errorf("parse LUKS2 JSON metadata: %w", err)
	}
	for _, k := range []string{"keyslots", "tokens", "segments", "digests", "config"} {
		if _, ok := top[k]; !ok {
			return nil, false, fmt.Errorf("LUKS2 JSON metadata lacks %q", k)
		}
	}
	m = new(metadata)
	if err := json.Unmarshal(text, m); err != nil {
		return nil, false, fmt.Errorf("parse LUKS2 JSON metadata: %w", err)
	}
	if m.Keyslots == nil || m.Tokens == nil || m.Segments == nil || m.Digests == nil {
		return nil, false, fmt.Errorf("LUKS2 JSON metadata lacks keyslots, tokens, segments or digests")
	}
	if err := m.validate(); err != nil {
		return nil, false, err
	}
	enc, err := m.encode()
	if err != nil {
		return nil, false, err
	}
	exact, err = sameJSON(text, enc)
	if err != nil {
		return nil, false, err
	}
	return m, exact, nil
}

// sameJSON compares two JSON texts semantically.
func sameJSON(a, b []byte) (bool, error) {
	var va, vb any
	da := json.NewDecoder(bytes.NewReader(a))
	da.UseNumber()
	if err := da.Decode(&va); err != nil {
		return false, fmt.Errorf("parse LUKS2 JSON metadata: %w", err)
	}
	db := json.NewDecoder(bytes.NewReader(b))
	db.UseNumber()
	if err := db.Decode(&vb); err != nil {
		return false, err
	}
	return reflect.DeepEqual(va, vb), nil
}

// encode renders compact JSON as cryptsetup does (no HTML escaping).
func (m *metadata) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode LUKS2 JSON metadata: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// clone deep-copies m through its JSON form.
func (m *metadata) clone() *metadata {
	enc, err := m.encode()
	if err != nil {
		panic(err) // m was produced by parse or by this package
	}
	c := new(metadata)
	if err := json.Unmarshal(enc, c); err != nil {
		panic(err)
	}
	return c
}

// parseID parses a JSON object key or reference: a decimal number in range.
func parseID(kind, s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= max || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("LUKS2 metadata: bad %s id %q", kind, s)
	}
	return n, nil
}

func decodeB64(what, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("LUKS2 metadata: %s is not base64: %w", what, err)
	}
	return b, nil
}

// validate checks the references and ranges cryptsetup checks, so that a
// copy that passes its checksum but would be rejected is treated as invalid.
func (m *metadata) validate() error {
	if m.Config.KeyslotsSize%4096 != 0 || m.Config.KeyslotsSize > maxKeyslotsSize {
		return fmt.Errorf("LUKS2 metadata: keyslots_size %d not 4096-aligned or above 128 MiB", m.Config.KeyslotsSize)
	}
	if !validMetadataSize(m.Config.JSONSize + binHeaderSize) {
		return fmt.Errorf("LUKS2 metadata: json_size %d invalid", m.Config.JSONSize)
	}
	// Raw keyslot areas lie inside the keyslots area, after both metadata
	// copies, and do not overlap (cryptsetup checks the same).
	areaStart := 2 * (m.Config.JSONSize + binHeaderSize)
	type span struct {
		id       string
		off, end uint64
	}
	var spans []span
	for k, ks := range m.Keyslots {
		if ks != nil && ks.Area != nil && ks.Area.Type == "raw" {
			a := ks.Area
			if a.Size == 0 || a.Offset < areaStart || a.Size > m.Config.KeyslotsSize || a.Offset-areaStart > m.Config.KeyslotsSize-a.Size {
				return fmt.Errorf("LUKS2 metadata: keyslot %s area [%d, +%d) outside the keyslots area", k, a.Offset, a.Size)
			}
			spans = append(spans, span{k, a.Offset, a.Offset + a.Size})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
	for i := 1; i < len(spans); i++ {
		if spans[i].off < spans[i-1].end {
			return fmt.Errorf("LUKS2 metadata: keyslot areas %s and %s overlap", spans[i-1].id, spans[i].id)
		}
	}
	for k, ks := range m.Keyslots {
		if _, err := parseID("keyslot", k, MaxKeyslots); err != nil {
			return err
		}
		if ks == nil || ks.Area == nil {
			return fmt.Errorf("LUKS2 metadata: keyslot %s has no area", k)
		}
		if ks.KeySize <= 0 || ks.KeySize > 512 {
			return fmt.Errorf("LUKS2 metadata: keyslot %s key_size %d invalid", k, ks.KeySize)
		}
		if ks.Type == "luks2" {
			if ks.AF == nil || ks.KDF == nil {
				return fmt.Errorf("LUKS2 metadata: keyslot %s lacks af or kdf", k)
			}
			if ks.AF.Stripes <= 0 || uint64(ks.AF.Stripes)*uint64(ks.KeySize) > maxKeyslotsSize {
				return fmt.Errorf("LUKS2 metadata: keyslot %s af stripes %d invalid", k, ks.AF.Stripes)
			}
			if _, err := decodeB64("kdf salt", ks.KDF.Salt); err != nil {
				return err
			}
			if ks.Area.Size > 0 && uint64(ks.KeySize)*uint64(ks.AF.Stripes) > ks.Area.Size {
				return fmt.Errorf("LUKS2 metadata: keyslot %s area too small for its key material", k)
			}
		}
		if ks.Priority != nil && (*ks.Priority < 0 || *ks.Priority > 2) {
			return fmt.Errorf("LUKS2 metadata: keyslot %s priority %d invalid", k, *ks.Priority)
		}
		if ks.Area.Offset%4096 != 0 && ks.Area.Type == "raw" {
			return fmt.Errorf("LUKS2 metadata: keyslot %s area offset not aligned", k)
		}
		if ks.Area.Size > 0 && (ks.Area.Offset+ks.Area.Size < ks.Area.Offset) {
			return fmt.Errorf("LUKS2 metadata: keyslot %s area overflows", k)
		}
	}
	for k, t := range m.Tokens {
		if _, err := parseID("token", k, MaxTokens); err != nil {
			return err
		}
		if _, err := parseToken(t, m); err != nil {
			return fmt.Errorf("LUKS2 metadata: token %s: %w", k, err)
		}
	}
	for k, s := range m.Segments {
		if _, err := strconv.ParseUint(k, 10, 31); err != nil {
			return fmt.Errorf("LUKS2 metadata: bad segment id %q", k)
		}
		if s == nil {
			return fmt.Errorf("LUKS2 metadata: segment %s empty", k)
		}
		if s.Size != "dynamic" {
			if _, err := strconv.ParseUint(s.Size, 10, 64); err != nil {
				return fmt.Errorf("LUKS2 metadata: segment %s size %q invalid", k, s.Size)
			}
		}
		if s.Type == "crypt" {
			switch s.SectorSize {
			case 512, 1024, 2048, 4096:
			default:
				return fmt.Errorf("LUKS2 metadata: segment %s sector_size %d invalid", k, s.SectorSize)
			}
		}
	}
	for k, d := range m.Digests {
		if _, err := parseID("digest", k, MaxKeyslots); err != nil {
			return err
		}
		if d == nil {
			return fmt.Errorf("LUKS2 metadata: digest %s empty", k)
		}
		for _, ks := range d.Keyslots {
			if _, ok := m.Keyslots[ks]; !ok {
				return fmt.Errorf("LUKS2 metadata: digest %s references missing keyslot %s", k, ks)
			}
		}
		for _, s := range d.Segments {
			if _, ok := m.Segments[s]; !ok {
				return fmt.Errorf("LUKS2 metadata: digest %s references missing segment %s", k, s)
			}
		}
		if _, err := decodeB64("digest salt", d.Salt); err != nil {
			return err
		}
		if _, err := decodeB64("digest", d.Digest); err != nil {
			return err
		}
	}
	return nil
}

// parseToken checks a token object as cryptsetup does: a JSON object with a
// string "type" and a "keyslots" array of ids of existing keyslots.
func parseToken(raw []byte, m *metadata) (Token, error) {
	var t struct {
		Type     *string   `json:"type"`
		Keyslots *[]string `json:"keyslots"`
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return Token{}, fmt.Errorf("%w: not a JSON object", ErrBadToken)
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if t.Type == nil || *t.Type == "" {
		return Token{}, fmt.Errorf("%w: missing string \"type\"", ErrBadToken)
	}
	if t.Keyslots == nil {
		return Token{}, fmt.Errorf("%w: missing \"keyslots\" array of strings", ErrBadToken)
	}
	if *t.Type == "luks2-keyring" {
		// cryptsetup's built-in type: without a key description cryptsetup
		// rejects the whole header.
		var kr struct {
			KeyDescription *string `json:"key_description"`
		}
		if json.Unmarshal(raw, &kr) != nil || kr.KeyDescription == nil {
			return Token{}, fmt.Errorf("%w: luks2-keyring token needs a string \"key_description\"", ErrBadToken)
		}
	}
	tok := Token{Type: *t.Type}
	for _, s := range *t.Keyslots {
		id, err := parseID("keyslot", s, MaxKeyslots)
		if err != nil {
			return Token{}, fmt.Errorf("%w: %v", ErrBadToken, err)
		}
		if m != nil {
			if _, ok := m.Keyslots[s]; !ok {
				return Token{}, fmt.Errorf("%w: references keyslot %d, which is not in use", ErrBadToken, id)
			}
		}
		tok.Keyslots = append(tok.Keyslots, id)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	tok.Raw = buf.Bytes()
	return tok, nil
}
