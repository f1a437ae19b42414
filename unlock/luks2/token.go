package luks2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// ImportToken stores token (a JSON object with a string "type" and a
// "keyslots" array of in-use keyslot ids as strings, like cryptsetup's
// token import) under id, 0..31, or AnyToken for the first free id. An id
// in use is refused with ErrTokenInUse unless replace is true. It returns the
// id used.
func ImportToken(dev Device, id int, token []byte, replace bool) (int, error) {
	if id != AnyToken && (id < 0 || id >= MaxTokens) {
		return -1, fmt.Errorf("import token %d: %w", id, ErrTokenRange)
	}
	h, m, err := loadForWrite(dev)
	if err != nil {
		return -1, fmt.Errorf("import token: %w", err)
	}
	t, err := parseToken(token, m)
	if err != nil {
		return -1, fmt.Errorf("import token into %s: %w", h.UUID, err)
	}
	if id == AnyToken {
		for i := 0; i < MaxTokens && id == AnyToken; i++ {
			if _, ok := m.Tokens[strconv.Itoa(i)]; !ok {
				id = i
			}
		}
		if id == AnyToken {
			return -1, fmt.Errorf("import token into %s: no free token id", h.UUID)
		}
	}
	if _, ok := m.Tokens[strconv.Itoa(id)]; ok && !replace {
		return -1, fmt.Errorf("import token %d into %s: %w", id, h.UUID, ErrTokenInUse)
	}
	m.Tokens[strconv.Itoa(id)] = t.Raw
	if err := commitNext(dev, h, m); err != nil {
		return -1, fmt.Errorf("import token %d into %s: %w", id, h.UUID, err)
	}
	return id, nil
}

// RemoveToken deletes token id; ErrTokenNotFound when there is none.
func RemoveToken(dev Device, id int) error {
	if id < 0 || id >= MaxTokens {
		return fmt.Errorf("remove token %d: %w", id, ErrTokenRange)
	}
	h, m, err := loadForWrite(dev)
	if err != nil {
		return fmt.Errorf("remove token %d: %w", id, err)
	}
	if _, ok := m.Tokens[strconv.Itoa(id)]; !ok {
		return fmt.Errorf("remove token %d from %s: %w", id, h.UUID, ErrTokenNotFound)
	}
	delete(m.Tokens, strconv.Itoa(id))
	if err := commitNext(dev, h, m); err != nil {
		return fmt.Errorf("remove token %d from %s: %w", id, h.UUID, err)
	}
	return nil
}

// tokenWithoutSlot returns raw with keyslot id removed from its "keyslots",
// leaving every other field as it was (raw itself when id is not there).
func tokenWithoutSlot(raw json.RawMessage, id string) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	var slots []string
	if err := json.Unmarshal(obj["keyslots"], &slots); err != nil {
		return nil, err
	}
	if !slices.Contains(slots, id) {
		return raw, nil
	}
	slots = slices.DeleteFunc(slots, func(s string) bool { return s == id })
	if slots == nil {
		slots = []string{}
	}
	b, err := json.Marshal(slots)
	if err != nil {
		return nil, err
	}
	obj["keyslots"] = b
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(obj); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// knownFlags are the persistent activation flags cryptsetup 2.6 stores.
var knownFlags = []string{"allow-discards", "same-cpu-crypt", "submit-from-crypt-cpus", "no-journal", "no-read-workqueue", "no-write-workqueue"}

// SetFlags replaces the persistent activation flags (config.flags), e.g.
// []string{"allow-discards"}; nil clears them.
func SetFlags(dev Device, flags []string) error {
	for _, f := range flags {
		if !slices.Contains(knownFlags, f) {
			return fmt.Errorf("set flags: flag %q: %w (known: %v)", f, ErrUnsupported, knownFlags)
		}
	}
	h, m, err := loadForWrite(dev)
	if err != nil {
		return fmt.Errorf("set flags: %w", err)
	}
	m.Config.Flags = nil
	for _, f := range flags {
		if !slices.Contains(m.Config.Flags, f) {
			m.Config.Flags = append(m.Config.Flags, f)
		}
	}
	if err := commitNext(dev, h, m); err != nil {
		return fmt.Errorf("set flags on %s: %w", h.UUID, err)
	}
	return nil
}
