package keyring

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// Blob layout, version 1:
//
//	magic "CKMS" | version 0x01 | key id (uint32, big-endian) | nonce (12) | AES-256-GCM ciphertext+tag
//
// The additional data is the header (magic, version, key id) followed by the
// node UUID, so a blob opens only for the node it was sealed for and with
// the key its header names.
const (
	magic      = "CKMS"
	version1   = 1
	headerSize = 4 + 1 + 4
	nonceSize  = 12
	tagSize    = 16
	// Overhead is how many bytes sealing adds.
	Overhead = headerSize + nonceSize + tagSize
)

// Errors from Open; the server maps each to a gRPC status.
var (
	ErrNotBlob        = errors.New("not a sealed blob")
	ErrUnknownKey     = errors.New("sealed with a master key this keyring does not have")
	ErrAuthentication = errors.New("sealed data does not open for this node")
)

func aad(header []byte, nodeUUID string) []byte {
	a := make([]byte, 0, len(header)+len(nodeUUID))
	return append(append(a, header...), nodeUUID...)
}

// Seal encrypts data for nodeUUID with the newest key.
func (r *Ring) Seal(nodeUUID string, data []byte) []byte {
	out := make([]byte, headerSize+nonceSize, Overhead+len(data))
	copy(out, magic)
	out[4] = version1
	binary.BigEndian.PutUint32(out[5:9], r.newest)
	nonce := out[headerSize : headerSize+nonceSize]
	rand.Read(nonce)
	return r.aeads[r.newest].Seal(out, nonce, data, aad(out[:headerSize], nodeUUID))
}

// Open decrypts a blob sealed for nodeUUID. It returns the key id the blob
// names, for the audit log and metrics.
func (r *Ring) Open(nodeUUID string, blob []byte) ([]byte, uint32, error) {
	if len(blob) < Overhead || string(blob[:4]) != magic {
		return nil, 0, fmt.Errorf("%w: want %q header and at least %d bytes, got %d bytes", ErrNotBlob, magic, Overhead, len(blob))
	}
	if blob[4] != version1 {
		return nil, 0, fmt.Errorf("%w: blob version %d, this server opens version %d", ErrNotBlob, blob[4], version1)
	}
	id := binary.BigEndian.Uint32(blob[5:9])
	aead, ok := r.aeads[id]
	if !ok {
		return nil, id, fmt.Errorf("%w: key id %d (keyring has %v)", ErrUnknownKey, id, r.IDs())
	}
	nonce := blob[headerSize : headerSize+nonceSize]
	pt, err := aead.Open(nil, nonce, blob[headerSize+nonceSize:], aad(blob[:headerSize], nodeUUID))
	if err != nil {
		return nil, id, fmt.Errorf("%w: node %s (sealed for another node, or altered)", ErrAuthentication, nodeUUID)
	}
	return pt, id, nil
}
