package keys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// SaltFile is the name of the lockToSTATE salt at the root of STATE.
const SaltFile = "encryption-salt.yaml"

// SaltSize is the size of the lockToSTATE salt.
const SaltSize = 32

// SaltSource gives STATE's lockToSTATE salt.
type SaltSource interface {
	Salt(ctx context.Context) ([]byte, error)
}

// LockedToSTATE wraps any key kind: its passphrase is the inner passphrase
// followed by the 32 raw salt bytes kept on STATE, so the volume no longer
// opens once STATE is wiped or replaced.
type LockedToSTATE struct {
	Inner Key
	Salt  SaltSource
}

// Kind implements Key.
func (k *LockedToSTATE) Kind() string { return k.Inner.Kind() + "+lockToSTATE" }

// Passphrase implements Key.
func (k *LockedToSTATE) Passphrase(ctx context.Context, s Slot) ([]byte, error) {
	salt, err := k.salt(ctx)
	if err != nil {
		return nil, err
	}
	defer Zero(salt)
	p, err := k.Inner.Passphrase(ctx, s)
	if err != nil {
		return nil, err
	}
	return appendZeroing(p, salt), nil
}

// Enroll implements Key.
func (k *LockedToSTATE) Enroll(ctx context.Context, s Slot) (*Enrollment, error) {
	salt, err := k.salt(ctx)
	if err != nil {
		return nil, err
	}
	defer Zero(salt)
	e, err := k.Inner.Enroll(ctx, s)
	if err != nil {
		return nil, err
	}
	e.Passphrase = appendZeroing(e.Passphrase, salt)
	return e, nil
}

func (k *LockedToSTATE) salt(ctx context.Context) ([]byte, error) {
	if k.Salt == nil {
		return nil, fmt.Errorf("%w: lockToSTATE: no STATE salt source (is STATE mounted?)", ErrKeyUnavailable)
	}
	salt, err := k.Salt.Salt(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: lockToSTATE: %w", ErrKeyUnavailable, err)
	}
	return salt, nil
}

// appendZeroing returns p+salt in a fresh buffer and zeroes p.
func appendZeroing(p, salt []byte) []byte {
	out := make([]byte, 0, len(p)+len(salt))
	out = append(append(out, p...), salt...)
	Zero(p)
	return out
}

// SaltDir reads the salt from the root of a mounted STATE.
type SaltDir string

// Salt implements SaltSource.
func (d SaltDir) Salt(context.Context) ([]byte, error) {
	return ReadSalt(string(d))
}

// saltYAML is encryption-salt.yaml: one key, a sequence of 32 integers.
type saltYAML struct {
	DiskSalt []int `yaml:"diskSalt"`
}

// ErrNoSalt: STATE has no encryption-salt.yaml.
var ErrNoSalt = errors.New("STATE has no " + SaltFile)

// ReadSalt reads encryption-salt.yaml from the STATE root dir.
func ReadSalt(dir string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, SaltFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (dir %s)", ErrNoSalt, dir)
	}
	if err != nil {
		return nil, err
	}
	return ParseSalt(data)
}

// ParseSalt decodes encryption-salt.yaml.
func ParseSalt(data []byte) ([]byte, error) {
	var s saltYAML
	if err := yaml.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", SaltFile, err)
	}
	if len(s.DiskSalt) != SaltSize {
		return nil, fmt.Errorf("%s: diskSalt has %d bytes, want %d", SaltFile, len(s.DiskSalt), SaltSize)
	}
	salt := make([]byte, SaltSize)
	for i, v := range s.DiskSalt {
		if v < 0 || v > 255 {
			return nil, fmt.Errorf("%s: diskSalt[%d] = %d is not a byte", SaltFile, i, v)
		}
		salt[i] = byte(v)
	}
	return salt, nil
}

// MarshalSalt encodes encryption-salt.yaml.
func MarshalSalt(salt []byte) ([]byte, error) {
	s := saltYAML{DiskSalt: make([]int, len(salt))}
	for i, b := range salt {
		s.DiskSalt[i] = int(b)
	}
	return yaml.Marshal(s)
}

// EnsureSalt is for the boot, right after STATE is first mounted: it creates
// encryption-salt.yaml (32 CSPRNG bytes, mode 0600, written to a temporary
// file, synced and renamed into place) when absent, and reports whether it
// did. An existing salt is never replaced: that would lock out every
// lockToSTATE volume.
func EnsureSalt(dir string, random io.Reader) (created bool, err error) {
	if _, err := ReadSalt(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrNoSalt) {
		return false, fmt.Errorf("existing salt unreadable, not replacing it: %w", err)
	}
	if random == nil {
		random = rand.Reader
	}
	salt := make([]byte, SaltSize)
	defer Zero(salt)
	if _, err := io.ReadFull(random, salt); err != nil {
		return false, fmt.Errorf("salt: %w", err)
	}
	data, err := MarshalSalt(salt)
	if err != nil {
		return false, err
	}
	defer Zero(data)
	tmp, err := os.CreateTemp(dir, ".encryption-salt-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, SaltFile)); err != nil {
		return false, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return true, nil
}
