// Package keyring holds the KMS master keys: a versioned list in a 0600 file,
// the newest key sealing, every key opening what it sealed, so the master
// key can be rotated without re-sealing old blobs first.
package keyring

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
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

// Keeps returns an error naming the first key of old that r lacks or holds
// with a different secret: blobs sealed with it would not open with r.
func (r *Ring) Keeps(old *Ring) error {
	mine := make(map[uint32][]byte, len(r.keys))
	for _, k := range r.keys {
		mine[k.ID] = k.Secret
	}
	for _, k := range old.keys {
		s, ok := mine[k.ID]
		switch {
		case !ok:
			return fmt.Errorf("master key %d is missing", k.ID)
		case subtle.ConstantTimeCompare(s, k.Secret) != 1:
			return fmt.Errorf("master key %d is a different key", k.ID)
		}
	}
	return nil
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

// Save writes the keyring atomically and durably: a temporary file in the
// same directory, fsynced, renamed over path, then the directory fsynced so
// the rename itself survives a power loss. A new file is mode 0600; a file
// that replaces an existing one gets that file's mode and owner before the
// rename, so a root-run `kms-server rotate` leaves a file the server (running
// as another user) can still read at its next reload. If the owner cannot
// be kept (not root, not the owner), nothing is replaced.
func (r *Ring) Save(path string) error {
	return r.save(path, osFS{})
}

// saveFS is the file-system calls Save makes whose order matters for
// crash safety; tests record them.
type saveFS interface {
	syncFile(f *os.File) error
	rename(oldpath, newpath string) error
	syncDir(dir string) error
}

type osFS struct{}

func (osFS) syncFile(f *os.File) error            { return f.Sync() }
func (osFS) rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

func (osFS) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (r *Ring) save(path string, fsys saveFS) error {
	b, err := json.MarshalIndent(file{Version: 1, Keys: r.keys}, "", "  ")
	if err != nil {
		return err
	}
	defer clear(b)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	mode, uid, gid := fs.FileMode(0o600), -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".keyring-*")
	if err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	fail := func(err error) error {
		tmp.Close()
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail(err)
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fail(fmt.Errorf("the new file cannot keep the old one's owner %d:%d (run rotate as root or as that user; the keyring is unchanged): %w", uid, gid, err))
		}
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		return fail(err)
	}
	if err := fsys.syncFile(tmp); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := fsys.rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("keyring %s: %w", path, err)
	}
	if err := fsys.syncDir(dir); err != nil {
		return fmt.Errorf("keyring %s: replaced, but syncing its directory failed (a power loss may bring the old file back): %w", path, err)
	}
	return nil
}
