package unlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
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
	// KeepFormatRecord: the caller removes a format's journal record
	// (Journal.End) itself, once the volume has its filesystem. Until then
	// the record, at its last stage (which decide never redoes), outlives
	// a crash between the format and mkfs (the sync included), and the
	// open that finds it reports FormatCompleted instead of removing it.
	KeepFormatRecord bool
	// KDFLimits bounds the memory and estimated time of a keyslot's KDF: a
	// slot that costs more is skipped, before its key is fetched, with an
	// error wrapping luks2.ErrKDFTooCostly. Zero fields: no bound.
	KDFLimits luks2.KDFLimits
	// SyncKeyBudget bounds the total time Sync spends, per volume, on
	// keys that did not open it; 0: DefaultSyncKeyBudget.
	SyncKeyBudget time.Duration

	// unlockSlot runs the LUKS2 unlock (the KDF); nil: Header.Unlock. The
	// benchmark wraps it to tell the engine's own time from the KDF's.
	unlockSlot func(h *luks2.Header, r io.ReaderAt, pass []byte, slot int) ([]byte, int, error)
	// digestIterations is the volume key digest's pbkdf2 cost on a format;
	// 0: luks2's default. Tests that format thousands of images lower it.
	digestIterations int
}

// FormatJournal remembers formats in progress across a crash: which
// LUKS2 UUID each writes and the stage it reached (a *meta.Journal).
// Record returns nil when the volume has none, and an error when the
// journal cannot be read or is not ours: then nothing is redone.
type FormatJournal interface {
	Begin(r meta.Record) error
	Advance(volumeID, stage string) error
	End(volumeID string) error
	Record(volumeID string) (*meta.Record, error)
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
	// Wiped says what was erased before the format and why ("" when
	// nothing was); the same line goes to Log as a warning.
	Wiped string
	// FormatCompleted: the open removed the journal record of a complete
	// format of this very header (same UUID): the boot that made it
	// stopped (its clear failed, or it crashed) and may not have made its
	// filesystem. Make one only if the opened volume carries no signature
	// at all.
	FormatCompleted bool
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
// crash is redone when decide says it provably never finished.
func (e *Engine) Format(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*Result, error) {
	return e.run(ctx, &vol, dev, size, false)
}

// Unlock opens the volume on dev (size bytes), or formats it when the
// partition is empty, then syncs its keyslots with the config. What it
// writes is chosen by decide alone; see there.
func (e *Engine) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*Result, error) {
	return e.run(ctx, &vol, dev, size, true)
}

// evidence is what observe read, for the executor and its messages.
type evidence struct {
	hdr        *luks2.Header
	hdrErr     error // from ReadHeader
	probeErr   error // from probe.CheckEmpty
	readErr    error // the first read error
	journalErr error
	opened     *Result // a key opened the volume
	openErr    error   // *OpenError when none did
}

// run observes the volume (and, with tryKeys and a valid header, tries
// its keys: that only reads), decides, and executes the decision.
func (e *Engine) run(ctx context.Context, vol *config.Volume, dev luks2.Device, size int64, tryKeys bool) (*Result, error) {
	if _, err := configuredKeys(vol); err != nil {
		return nil, err
	}
	r := &readWatch{r: dev}
	obs, ev := e.observe(vol.ID, r, size)
	obs.authenticated = vol.Trust.Authenticated
	if obs.header == headerValid && tryKeys {
		res, err := e.open(ctx, vol, r, ev.hdr)
		var oe *OpenError
		switch {
		case err == nil:
			ev.opened, obs.keys = res, outcomes(res.Attempts)
		case errors.As(err, &oe):
			ev.openErr, obs.keys = err, outcomes(oe.Attempts)
		default:
			return nil, err // cancelled, bad mapping: nothing decided
		}
	}
	if r.err != nil {
		obs.ioErr, ev.readErr = true, r.err
	}
	op := "unlock"
	if !tryKeys {
		op = "format"
	}
	return e.execute(ctx, vol, dev, size, op, obs, decide(obs), ev)
}

// observe reads the journal record, the header and, without a valid
// header, what probe finds. It never writes.
func (e *Engine) observe(id string, r *readWatch, size int64) (observed, evidence) {
	var o observed
	var ev evidence
	if e.Journal != nil {
		rec, err := e.Journal.Record(id)
		switch {
		case err != nil:
			o.journal, ev.journalErr = journalUnreadable, err
			e.log().Warn("format journal unreadable: no format of this volume is redone", "volume", id, "err", err)
		case rec != nil:
			o.journal, o.record = journalRecord, rec
		default:
			o.journal = journalClean
		}
	}
	hdr, err := luks2.ReadHeader(r)
	ev.hdr, ev.hdrErr = hdr, err
	switch {
	case err == nil:
		o.header, o.uuid = headerValid, hdr.UUID
		if o.record != nil {
			_, o.firstSlot = hdr.Keyslots[o.record.Slot]
			_, o.firstToken = hdr.Tokens[o.record.Slot]
			o.otherSlots = len(hdr.Keyslots) > 1 || (len(hdr.Keyslots) == 1 && !o.firstSlot)
		}
		return o, ev
	case r.err != nil:
		o.header = headerUnreadable
		return o, ev
	case errors.Is(err, luks2.ErrNotLUKS):
		o.header = headerNone
	default:
		o.header, o.uuid = headerTorn, tornUUID(r)
	}
	res, err := probe.CheckEmpty(r, size)
	ev.probeErr = err
	switch {
	case r.err != nil || (err != nil && res == nil):
		o.probe = probeUnreadable
	case res.Empty():
		o.probe = probeEmpty
	default:
		o.probe = probeOurs
		for _, s := range res.Signatures {
			if !strings.HasPrefix(s.Name, "LUKS") {
				o.probe = probeForeign
			}
		}
	}
	if o.probe == probeOurs {
		// a format of ours writes only its header and keyslot area
		switch off, err := nonZeroPastHeader(r, size); {
		case err != nil || r.err != nil:
			o.probe = probeUnreadable
			if ev.readErr = r.err; ev.readErr == nil {
				ev.readErr = err
			}
		case off >= 0:
			o.probe = probeForeign
			ev.probeErr = fmt.Errorf("%w; and non-zero bytes at offset %d, past the LUKS2 header area (%d bytes) where a format of ours writes", ev.probeErr, off, luks2HeaderArea)
		}
	}
	return o, ev
}

// luks2HeaderArea is where a format of ours writes: the LUKS2 header and
// keyslot area before the data segment.
const luks2HeaderArea = 16 << 20

// nonZeroPastHeader is the offset of the first non-zero byte in the
// first MiB after the header area or in the last MiB of the partition;
// -1 when both are zero (or the partition ends at the header area).
func nonZeroPastHeader(r io.ReaderAt, size int64) (int64, error) {
	const span = probe.ZeroCheckSize
	buf := make([]byte, span)
	for _, off := range []int64{luks2HeaderArea, max(luks2HeaderArea, size-span)} {
		n := min(span, size-off)
		if n <= 0 {
			continue
		}
		if m, err := r.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
			return -1, fmt.Errorf("read at %d: %w", off, err)
		}
		for i, c := range buf[:n] {
			if c != 0 {
				return off + int64(i), nil
			}
		}
	}
	return -1, nil
}

// outcomes classifies each attempt for decide.
func outcomes(as []Attempt) []keyOutcome {
	out := make([]keyOutcome, len(as))
	for i, a := range as {
		switch {
		case a.Err == nil:
			out[i] = keyOpened
		case errors.Is(a.Err, context.DeadlineExceeded):
			out[i] = keyTimedOut
		case errors.Is(a.Err, keys.ErrWrongKey), errors.Is(a.Err, ErrSlotEmpty):
			out[i] = keyWrong
		default:
			out[i] = keyUnavailable
		}
	}
	return out
}

// tornUUID is the UUID that the binary headers of a damaged LUKS2 header
// name: "" when none has a LUKS2 magic, "several" when they disagree.
func tornUUID(r io.ReaderAt) string {
	const offUUID, lenUUID = 168, 40
	uuid := ""
	bin := make([]byte, offUUID+lenUUID)
	for _, off := range []int64{0, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000} {
		magic := "SKUL\xba\xbe"
		if off == 0 {
			magic = "LUKS\xba\xbe"
		}
		if n, _ := r.ReadAt(bin, off); n < len(bin) || string(bin[:6]) != magic {
			continue
		}
		u := string(bin[offUUID:])
		if i := strings.IndexByte(u, 0); i >= 0 {
			u = u[:i]
		}
		switch {
		case uuid == "":
			uuid = u
		case u != uuid:
			return "several"
		}
	}
	return uuid
}

// readWatch remembers the first read error (other than EOF) on a device,
// so that an I/O error is never taken for a missing header.
type readWatch struct {
	r   io.ReaderAt
	mu  sync.Mutex
	err error
}

func (w *readWatch) ReadAt(p []byte, off int64) (int, error) {
	n, err := w.r.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		w.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("read at %d: %w", off, err)
		}
		w.mu.Unlock()
	}
	return n, err
}
