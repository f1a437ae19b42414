package keys

import (
	"encoding/json"
	"fmt"
)

// LUKS2 token types Talos writes (token id == keyslot), and ours.
const (
	TokenKMS      = "sideroKMS"
	TokenTPM      = "talos-tpm2"
	TokenRecovery = "cryptinit-recovery"
)

// recoveryField marks a Talos token's slot as a recovery key (an extra
// top-level field: LUKS2 keeps it, Talos ignores it).
const recoveryField = "cryptinit-recovery"

// talosToken is a Talos LUKS2 token: note the capitalised UserData, and
// "keyslots" left empty (Talos finds the token by id == keyslot).
type talosToken struct {
	Type     string          `json:"type"`
	Keyslots []string        `json:"keyslots"`
	UserData json.RawMessage `json:"UserData,omitempty"`
}

// encodeToken builds a Talos token holding userData.
func encodeToken(typ string, userData any) ([]byte, error) {
	ud, err := json.Marshal(userData)
	if err != nil {
		return nil, err
	}
	return json.Marshal(talosToken{Type: typ, Keyslots: []string{}, UserData: ud})
}

// decodeToken checks a slot's token is of type typ and returns its UserData.
func decodeToken(s Slot, typ string, userData any) error {
	if len(s.Token) == 0 {
		return fmt.Errorf("%w: slot %d has no %s token", ErrNoToken, s.Slot, typ)
	}
	var t talosToken
	if err := json.Unmarshal(s.Token, &t); err != nil {
		return fmt.Errorf("%w: slot %d token: %v", ErrBadToken, s.Slot, err)
	}
	if t.Type != typ {
		return fmt.Errorf("%w: slot %d token is %q, want %q", ErrBadToken, s.Slot, t.Type, typ)
	}
	if err := json.Unmarshal(t.UserData, userData); err != nil {
		return fmt.Errorf("%w: slot %d %s UserData: %v", ErrBadToken, s.Slot, typ, err)
	}
	return nil
}

// TokenType returns a token's type, or "".
func TokenType(token []byte) string {
	var t struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(token, &t) != nil {
		return ""
	}
	return t.Type
}

// RecoveryToken marks a slot as a recovery key: token (the kind's token, or
// nil) gains the marker field, or a bare marker token is made for kinds
// without one. Sync never removes a slot whose token is marked.
func RecoveryToken(token []byte) ([]byte, error) {
	if len(token) == 0 {
		return json.Marshal(talosToken{Type: TokenRecovery, Keyslots: []string{}})
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(token, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	m[recoveryField] = json.RawMessage("true")
	return json.Marshal(m)
}

// IsRecovery reports whether a slot's token marks it as a recovery key.
func IsRecovery(token []byte) bool {
	var t struct {
		Type     string `json:"type"`
		Recovery bool   `json:"cryptinit-recovery"`
	}
	if json.Unmarshal(token, &t) != nil {
		return false
	}
	return t.Type == TokenRecovery || t.Recovery
}
