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
	// Journal, when set (a *meta.Journal on the META partition), records each
	// format while it runs, so that one interrupted by a crash is redone on
	// the next boot. Without it such a partition counts as not empty.
	Journal FormatJournal
	// SyncKeyBudget bounds the total time Sync spends, per volume, on
	// keys that did not open it; 0: DefaultSyncKeyBudget.
	SyncKeyBudget time.Duration

	// unlockSlot runs the LUKS2 unlock (the KDF); nil: Header.Unlock. The
	// benchmark wraps it to tell the engine's own time from the KDF's.
	unlockSlot func(h *luks2.Header, r io.ReaderAt, pass []byte, slot int) ([]byte, int, error)
}

// FormatJournal remembers formats in progress across a crash.
type FormatJournal interface {
	BeginFormat(volumeID string) error
	EndFormat(volumeID string) error
	FormatPending(volumeID string) (bool, error)
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

// Attempt is one key tried on its slot. Duration is the whole attempt;
// KeyDuration (fetching the passphrase: KMS round trip, TPM unseal, salt
// read) and KDFDuration (the LUKS2 keyslot KDF, or writing the new header
// with it on a format) are its two parts, so a slow boot can tell a slow
// key source from an expensive KDF.
type Attempt struct {
	Slot        int
	Kind        string
	Err         error // nil: it opened (or formatted)
	Duration    time.Duration
	KeyDuration time.Duration
	KDFDuration time.Duration
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
	case errors.Is(err, luks2.ErrNoValidHeader) && e.formatPending(vol.ID):
		// our own format was cut short while writing the header
		return e.Format(ctx, vol, dev, size)
	case err != nil:
		return nil, fmt.Errorf("unlock %s: read LUKS2 header: %w (nothing was written)", vol.ID, err)
	}
	res, err := e.open(ctx, &vol, dev, hdr)
	if err != nil && errors.Is(err, ErrNoKeyOpens) && e.formatPending(vol.ID) {
		// the header was written but our format never finished (e.g. the
		// token of its kms/tpm key is missing): it never held data
		e.log().Warn("redoing an interrupted format", "volume", vol.ID, "err", err)
		if err := probe.Wipe(dev, size); err != nil {
			return nil, fmt.Errorf("unlock %s: clear the interrupted format: %w", vol.ID, err)
		}
		return e.Format(ctx, vol, dev, size)
	}
	if err != nil {
		return nil, err
	}
	if e.formatPending(vol.ID) {
		// the format finished before the crash: forget it
		e.endFormat(vol.ID)
	}
	res.Sync = e.Sync(ctx, vol, dev, res)
	return res, nil
}

func (e *Engine) formatPending(id string) bool {
	if e.Journal == nil {
		return false
	}
	pending, err := e.Journal.FormatPending(id)
	if err != nil {
		e.log().Warn("format journal unreadable", "volume", id, "err", err)
	}
	return pending
}

func (e *Engine) endFormat(id string) {
	if err := e.Journal.EndFormat(id); err != nil {
		e.log().Warn("format journal not cleared", "volume", id, "err", err)
	}
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
// A partition that is not empty is refused with an error wrapping
// probe.ErrNotEmpty (a *probe.NotEmptyError names what was found) and is
// left untouched. With a Journal, a format of this volume cut short by a
// crash is redone: what it left cannot be opened by anyone.
func (e *Engine) Format(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*Result, error) {
	if hdr, err := luks2.ReadHeader(dev); err == nil {
		return nil, fmt.Errorf("format %s: %w: it already holds a LUKS%d volume (UUID %s); nothing was written", vol.ID, probe.ErrNotEmpty, hdr.Version, hdr.UUID)
	} else if !errors.Is(err, luks2.ErrNotLUKS) && !errors.Is(err, luks2.ErrNoValidHeader) {
		return nil, fmt.Errorf("format %s: %w; nothing was written", vol.ID, err)
	}
	if _, err := probe.CheckEmpty(dev, size); err != nil {
		if !e.formatPending(vol.ID) {
			return nil, fmt.Errorf("format %s: %w", vol.ID, err)
		}
		// what is there is our own interrupted format: no valid LUKS
		// header, so nothing on it can be opened; start again
		e.log().Warn("redoing an interrupted format", "volume", vol.ID, "found", err)
		if err := probe.Wipe(dev, size); err != nil {
			return nil, fmt.Errorf("format %s: clear the interrupted format: %w", vol.ID, err)
		}
	}
	if e.Journal != nil {
		if err := e.Journal.BeginFormat(vol.ID); err != nil {
			// formatting still works; only a crash during it would then
			// need a manual wipe
			e.log().Warn("format not journalled", "volume", vol.ID, "err", err)
		}
	}
	res, err := e.format(ctx, &vol, dev, size)
	if err != nil {
		return nil, err
	}
	if e.Journal != nil {
		e.endFormat(vol.ID)
	}
	res.Sync = e.Sync(ctx, vol, dev, res)
	return res, nil
}
