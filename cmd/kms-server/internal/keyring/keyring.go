// Package keyring holds the KMS master keys: a versioned list in a 0600 file,
// the newest key sealing, every key opening what it sealed, so the master
// key can be rotated without re-sealing old blobs first.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// KeySize is the master key size: AES-256.
const KeySize = 32

// Key is one master key.
type Key struct {
	ID      uint32    `json:"id"`
	Created time.Time `json:"created"`
	Secret  []byte    `json:"key"`
}

// file is the on-disk form.
type file struct {
	Version int   `json:"version"`
	Keys    []Key `json:"keys"`
}

// Ring is an immutable set of master keys; Rotate returns a new Ring.
type Ring struct {
	keys   []Key
	aeads  map[uint32]cipher.AEAD
	newest uint32
}

// ErrInsecureFile is returned for a keyring file readable by others.
var ErrInsecureFile = errors.New("keyring file is readable by group or others")

// New builds a Ring from keys.
func New(keys []Key) (*Ring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring has no keys")
	}
	r := &Ring{aeads: make(map[uint32]cipher.AEAD, len(keys))}
	for _, k := range keys {
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("keyring key %d: %d bytes, want %d", k.ID, len(k.Secret), KeySize)
		}
		if k.ID == 0 {
			return nil, errors.New("keyring key id 0 is reserved")
		}
		if _, dup := r.aeads[k.ID]; dup {
			return nil, fmt.Errorf("keyring key id %d appears twice", k.ID)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("keyring key %d: %w", k.ID, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring key %d: %w", k.ID, err)
		}
		r.aeads[k.ID] = aead
		r.newest = max(r.newest, k.ID)
		r.keys = append(r.keys, k)
	}
	return r, nil
}

// Generate returns a Ring with one fresh key.
func Generate() (*Ring, error) {
	return New([]Key{newKey(1)})
}

func newKey(id uint32) Key {
	k := Key{ID: id, Created: time.Now().UTC().Truncate(time.Second), Secret: make([]byte, KeySize)}
	rand.Read(k.Secret) // never fails (crypto/rand since Go 1.24)
	return k
}

// Rotate returns a Ring with a new newest key added; older keys stay to open
// old blobs.
func (r *Ring) Rotate() (*Ring, error) {
	keys := append(append([]Key(nil), r.keys...), newKey(r.newest+1))
	return New(keys)
}

// Newest is the id of the key new seals use.
func (r *Ring) Newest() uint32 { return r.newest }

// Len is the number of keys.
func (r *Ring) Len() int { return len(r.keys) }

// IDs lists the key ids.
func (r *Ring) IDs() []uint32 {
	ids := make([]uint32, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.ID
	}
	return ids
}

// Load reads a keyring file. A file readable by group or others is refused:
// the master keys open every node's disks.
func Load(path string) (*Ring, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keyring %s mode %v: %w; run chmod 600 %s", path, fi.Mode().Perm(), ErrInsecureFile, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	clear(b)
	if f.Version != 1 {
		return nil, fmt.Errorf("keyring %s: version %d, this server reads version 1", path, f.Version)
	}
	r, err := New(f.Keys)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", path, err)
	}
	return r, nil
}

// LoadOrCreate loads path, or creates it with one fresh key (mode 0600) when
// it does not exist. created tells which happened.
func LoadOrCreate(path string) (r *Ring, created bool, err error) {
	r, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return r, false, err
	}
	if r, err = Generate(); err != nil {
		return nil, false, err
	}
	if err := r.Save(path); err != nil {
		return nil, false, err
	}
	return r, true, nil
}

// Save writes the keyring atomically (temporary file, fsync, rename), mode
// 0600.
func (r *Ring) Save(path string) error {
	b, err := json.MarshalIndent(file{Version: 1, Keys: r.keys}, "", "  ")
	if err != nil {
		return err
	}
	defer clear(b)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".keyring-*")
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	return nil
}
