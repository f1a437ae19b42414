package unlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// DefaultKeyTimeout bounds how long one key may take to produce its
// passphrase (KMS round trip, TPM unseal); the KDF itself is not bounded.
const DefaultKeyTimeout = 30 * time.Second

// Engine opens, formats and syncs volumes. Its zero value works with keys
// that need no hardware (static); fill Env for the others.
type Engine struct {
	Env keys.Env
	// StateDir is the root of the mounted STATE, for lockToSTATE salts
	// (used when Env.Salt is nil).
	StateDir   string
	KeyTimeout time.Duration    // per key; 0: DefaultKeyTimeout
	Now        func() time.Time // nil: time.Now
	Log        *slog.Logger     // nil: discard; never given secrets
	Rand       io.Reader        // volume keys; nil: crypto/rand
}

// Result is an opened (or freshly formatted) volume.
type Result struct {
	VolumeID  string
	UUID      string        // LUKS2 UUID
	VolumeKey []byte        // for dm-crypt; Zero() it after mapping
	Mapping   luks2.Mapping // cipher, offset, size, sector size; AllowDiscards merged with the config
	Options   []string      // dm-crypt performance options from the config
	Formatted bool          // freshly formatted: make the filesystem
	Slot      int           // the slot that opened (or formatted) the volume
	Kind      string        // that key's kind
	Attempts  []Attempt     // every key tried, in order
	Sync      *SyncReport   // nil when sync did not run
}

// Zero wipes the volume key.
func (r *Result) Zero() {
	if r != nil {
		keys.Zero(r.VolumeKey)
	}
}

// Attempt is one key tried on its slot.
type Attempt struct {
	Slot     int
	Kind     string
	Err      error // nil: it opened (or formatted)
	Duration time.Duration
}

func (a Attempt) String() string {
	if a.Err == nil {
		return fmt.Sprintf("slot %d (%s): ok", a.Slot, a.Kind)
	}
	return fmt.Sprintf("slot %d (%s): %v", a.Slot, a.Kind, a.Err)
}

// Errors callers decide on.
var (
	// ErrNoKeyOpens: no configured key opened the volume (see *OpenError).
	ErrNoKeyOpens = errors.New("no configured key opens the volume")
	// ErrSlotEmpty: the key's slot holds no keyslot.
	ErrSlotEmpty = errors.New("keyslot is empty")
	// ErrNotEncrypted: the volume config has no encryption section.
	ErrNotEncrypted = errors.New("volume has no encryption config")
	// ErrNoKeyEnrolls: formatting failed because no key could be created.
	ErrNoKeyEnrolls = errors.New("no configured key can be created")
)

// OpenError lists every slot tried and why it failed.
type OpenError struct {
	Volume   string
	Op       string // "open" or "format"
	Attempts []Attempt
	Err      error // ErrNoKeyOpens or ErrNoKeyEnrolls
}

func (e *OpenError) Error() string {
	s := fmt.Sprintf("%s %s: %v:", e.Op, e.Volume, e.Err)
	for _, a := range e.Attempts {
		s += "\n  " + a.String()
	}
	if e.Op == "open" {
		s += "\n  (check the volume's keys in the machine config or META, the node UUID, the KMS/TPM, and that STATE is the one the volume was locked to)"
	}
	return s
}

func (e *OpenError) Unwrap() error { return e.Err }

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) log() *slog.Logger {
	if e.Log != nil {
		return e.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (e *Engine) env() *keys.Env {
	env := e.Env
	if env.Salt == nil && e.StateDir != "" {
		env.Salt = keys.SaltDir(e.StateDir)
	}
	return &env
}

func (e *Engine) keyContext(ctx context.Context) (context.Context, context.CancelFunc) {
	t := e.KeyTimeout
	if t <= 0 {
		t = DefaultKeyTimeout
	}
	return context.WithTimeout(ctx, t)
}

// configuredKeys returns the volume's keys in slot order.
func configuredKeys(vol *config.Volume) ([]config.Key, error) {
	if vol.Encryption == nil {
		return nil, fmt.Errorf("volume %s: %w", vol.ID, ErrNotEncrypted)
	}
	ks := slices.Clone(vol.Encryption.Keys)
	slices.SortStableFunc(ks, func(a, b config.Key) int { return a.Slot - b.Slot })
	return ks, nil
}

// Unlock opens the volume on dev (size bytes), or formats it when the
// partition is empty, then syncs its keyslots with the config.
func (e *Engine) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*Result, error) {
	hdr, err := luks2.ReadHeader(dev)
	switch {
	case errors.Is(err, luks2.ErrNotLUKS):
		// never format over anything: Format checks the empty rule
		return e.Format(ctx, vol, dev, size)
	case err != nil:
		return nil, fmt.Errorf("unlock %s: read LUKS2 header: %w (nothing was written)", vol.ID, err)
	}
	res, err := e.open(ctx, &vol, dev, hdr)
	if err != nil {
		return nil, err
	}
	res.Sync = e.Sync(ctx, vol, dev, res)
	return res, nil
}

// Open finds the key that opens the volume; it never writes.
func (e *Engine) Open(ctx context.Context, vol config.Volume, dev io.ReaderAt) (*Result, error) {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", vol.ID, err)
	}
	return e.open(ctx, &vol, dev, hdr)
}

// Format formats an empty partition with the first key that can be
// created, adds the other configured keys and returns the opened volume.
// A partition that is not empty is refused with a *probe.NotEmptyError and
// left untouched.
func (e *Engine) Format(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*Result, error) {
	if _, err := probe.CheckEmpty(dev, size); err != nil {
		return nil, fmt.Errorf("format %s: %w", vol.ID, err)
	}
	res, err := e.format(ctx, &vol, dev, size)
	if err != nil {
		return nil, err
	}
	res.Sync = e.Sync(ctx, vol, dev, res)
	return res, nil
}
