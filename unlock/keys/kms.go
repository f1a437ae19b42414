package keys

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
)

// KMSKey is a 32-byte random key sealed by a network KMS; the sealed blob is
// kept in a sideroKMS token and the passphrase is the key in standard base64.
type KMSKey struct {
	Endpoint string
	KMS      KMS
	NodeUUID UUIDSource
	Rand     io.Reader
}

// kmsUserData is the sideroKMS token's UserData.
type kmsUserData struct {
	SealedData []byte `json:"sealedData"`
}

// Kind implements Key.
func (*KMSKey) Kind() string { return "kms" }

func (k *KMSKey) nodeUUID(ctx context.Context) (string, error) {
	if k.KMS == nil {
		return "", fmt.Errorf("%w: no KMS client (network not up?)", ErrKeyUnavailable)
	}
	if k.NodeUUID == nil {
		return "", fmt.Errorf("%w: kms: no node UUID source", ErrKeyUnavailable)
	}
	id, err := k.NodeUUID.NodeUUID(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: kms: node UUID: %w", ErrKeyUnavailable, err)
	}
	return id, nil
}

// Passphrase implements Key.
func (k *KMSKey) Passphrase(ctx context.Context, s Slot) ([]byte, error) {
	var ud kmsUserData
	if err := decodeToken(s, TokenKMS, &ud); err != nil {
		return nil, err
	}
	id, err := k.nodeUUID(ctx)
	if err != nil {
		return nil, err
	}
	key, err := k.KMS.Unseal(ctx, k.Endpoint, id, ud.SealedData)
	if err != nil {
		return nil, fmt.Errorf("%w: kms %s unseal: %w", ErrKeyUnavailable, k.Endpoint, err)
	}
	defer Zero(key)
	return encodeKey(key), nil
}

// Enroll implements Key.
func (k *KMSKey) Enroll(ctx context.Context, s Slot) (*Enrollment, error) {
	id, err := k.nodeUUID(ctx)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	defer Zero(key)
	if _, err := io.ReadFull(k.Rand, key); err != nil {
		return nil, fmt.Errorf("kms: random key: %w", err)
	}
	sealed, err := k.KMS.Seal(ctx, k.Endpoint, id, key)
	if err != nil {
		return nil, fmt.Errorf("%w: kms %s seal: %w", ErrKeyUnavailable, k.Endpoint, err)
	}
	token, err := encodeToken(TokenKMS, kmsUserData{SealedData: sealed})
	if err != nil {
		return nil, err
	}
	return &Enrollment{Passphrase: encodeKey(key), Token: token}, nil
}

// encodeKey is the passphrase of a random key: standard base64 (44 chars).
func encodeKey(key []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(key)))
	base64.StdEncoding.Encode(out, key)
	return out
}
