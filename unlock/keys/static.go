package keys

import (
	"bytes"
	"context"
)

// Static is a passphrase written in the config, used byte for byte.
type Static struct {
	Secret []byte
}

// Kind implements Key.
func (*Static) Kind() string { return "static" }

// Passphrase implements Key.
func (k *Static) Passphrase(context.Context, Slot) ([]byte, error) {
	return bytes.Clone(k.Secret), nil
}

// Enroll implements Key: a static key has no token.
func (k *Static) Enroll(context.Context, Slot) (*Enrollment, error) {
	return &Enrollment{Passphrase: bytes.Clone(k.Secret)}, nil
}
