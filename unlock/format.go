package unlock

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// execute performs d, the decision on what observe saw (ev); it is the
// only code that writes to the volume before the sync. It writes:
//   - open: META (Journal.End) when d.clearRecord, removing the record
//     (Result.FormatCompleted when it named this header's UUID; then,
//     with KeepFormatRecord, the caller removes it); then Sync writes
//     key slots.
//   - format: formatVolume (below): META (Journal.Begin, Advance, and
//     End unless KeepFormatRecord) and the volume's LUKS2 header,
//     keyslot and token, then Sync.
//   - redo: META (Journal.Begin, resetting the record to "begun") when
//     its stage is past "begun"; the volume's header area and last MiB
//     (probe.Wipe); then as format, with the record's UUID.
//   - refuse: nothing.
func (e *Engine) execute(ctx context.Context, vol *config.Volume, dev luks2.Device, size int64, op string, o observed, d decision, ev evidence) (*Result, error) {
	if o.record != nil && (d.action == actRefuse || (d.action == actOpen && o.uuid != o.record.UUID)) {
		e.log().Warn("format journal names this volume; its format is not redone", "volume", vol.ID,
			"journal_uuid", o.record.UUID, "stage", o.record.Stage, "header_uuid", o.uuid, "action", d.action.String(), "reason", d.reason)
	}
	switch d.action {
	case actOpen:
		res := ev.opened
		if d.clearRecord {
			res.FormatCompleted = o.record.UUID == o.uuid
			if res.FormatCompleted && e.KeepFormatRecord {
				res.Sync = e.Sync(ctx, *vol, dev, res)
				return res, nil // the caller ends the record after mkfs
			}
			if err := e.Journal.End(vol.ID); err != nil {
				res.Zero()
				return nil, fmt.Errorf("unlock %s: the format it records is complete, but: %w (stopping before the volume is used: a stale record could let a later boot take it for an unfinished format)", vol.ID, err)
			}
		}
		res.Sync = e.Sync(ctx, *vol, dev, res)
		return res, nil
	case actFormat:
		return e.formatVolume(ctx, vol, dev, size, "")
	case actRedo:
		erased := fmt.Sprintf("the LUKS2 header area (bytes 0-%d) and the last MiB (bytes %d-%d)",
			min(size, wipeHead), max(0, size-wipeTail), size)
		wiped := fmt.Sprintf("%s: erased %s", d.reason, erased)
		e.log().Warn("redoing an interrupted format: wiping it", "volume", vol.ID, "reason", d.reason, "erased", erased)
		if o.record.Stage != meta.StageBegun {
			// back to "begun" first: a crash in the wipe then still
			// counts as our own unfinished format
			r := *o.record
			if err := e.Journal.Begin(r); err != nil {
				return nil, fmt.Errorf("%s %s: %w; nothing was written", op, vol.ID, err)
			}
		}
		if err := probe.Wipe(dev, size); err != nil {
			return nil, fmt.Errorf("%s %s: wipe the interrupted format: %w", op, vol.ID, err)
		}
		res, err := e.formatVolume(ctx, vol, dev, size, o.record.UUID)
		if err != nil {
			return nil, fmt.Errorf("%w (after wiping: %s)", err, wiped)
		}
		res.Wiped = wiped
		return res, nil
	}
	switch {
	case errors.Is(d.refusal, ErrNoKeyOpens) && ev.openErr != nil:
		return nil, ev.openErr
	case errors.Is(d.refusal, ErrNoKeyOpens):
		return nil, fmt.Errorf("%s %s: %w: it already holds a LUKS%d volume (UUID %s); nothing was written", op, vol.ID, probe.ErrNotEmpty, ev.hdr.Version, ev.hdr.UUID)
	case errors.Is(d.refusal, errUnreadable):
		cause := ev.readErr
		if cause == nil {
			cause = ev.probeErr
		}
		return nil, fmt.Errorf("%s %s: %w: %v; nothing was written", op, vol.ID, errUnreadable, cause)
	case errors.Is(d.refusal, ErrFormatNotAuthenticated):
		return nil, fmt.Errorf("%s %s: %w (config from %s): %s; nothing was written: put the machine config in the signed image, or format it with cryptctl volume format", op, vol.ID, ErrFormatNotAuthenticated, vol.Trust.Source, d.reason)
	case errors.Is(d.refusal, meta.ErrJournalUnreadable):
		return nil, fmt.Errorf("%s %s: %w; nothing was written (repair META or remove its tag 0x%X)", op, vol.ID, ev.journalErr, meta.TagFormatJournal)
	case o.header == headerTorn:
		return nil, fmt.Errorf("%s %s: read LUKS2 header: %w (nothing was written: %s)", op, vol.ID, ev.hdrErr, d.reason)
	case ev.probeErr != nil:
		return nil, fmt.Errorf("%s %s: %w", op, vol.ID, ev.probeErr)
	}
	return nil, fmt.Errorf("%s %s: %w: %s; nothing was written", op, vol.ID, d.refusal, d.reason)
}

// wipeHead and wipeTail are what probe.Wipe zeroes at the start (up to
// the last LUKS2 secondary header) and at the end of a partition.
const (
	wipeHead = 4<<20 + 4096
	wipeTail = 1 << 20
)

// formatVolume formats with the first key that can be created, journalling
// each stage when there is a Journal: Begin (UUID chosen, nothing
// written), the header with its keyslot, the token, End (left to the
// caller with KeepFormatRecord). uuid "" picks a
// new one. Known window without a Journal: a crash between the header and
// a kms/tpm key's token leaves a volume nobody can open, which needs a
// wipe (it never held data).
func (e *Engine) formatVolume(ctx context.Context, vol *config.Volume, dev luks2.Device, size int64, uuid string) (*Result, error) {
	ks, err := configuredKeys(vol)
	if err != nil {
		return nil, err
	}
	if uuid == "" {
		if uuid, err = e.newUUID(); err != nil {
			return nil, fmt.Errorf("format %s: %w", vol.ID, err)
		}
	}
	if _, err := e.newSlotKDF(vol); err != nil {
		return nil, fmt.Errorf("format %s: %w; nothing was written", vol.ID, err)
	}
	res := &Result{VolumeID: vol.ID, Slot: -1, Formatted: true}
	for _, ck := range ks {
		k, err := keys.FromConfig(ck, e.env())
		kind := ck.Kind()
		if k != nil {
			kind = k.Kind()
		}
		start := e.now()
		var enr *keys.Enrollment
		if err == nil {
			kctx, cancel := e.keyContext(ctx)
			enr, err = k.Enroll(kctx, keys.Slot{VolumeID: vol.ID, Slot: ck.Slot})
			cancel()
		}
		fetched := e.now()
		if err != nil {
			d := fetched.Sub(start)
			res.Attempts = append(res.Attempts, Attempt{Slot: ck.Slot, Kind: kind, Err: err, Duration: d, KeyDuration: d})
			e.log().Info("key cannot be created", "volume", vol.ID, "slot", ck.Slot, "kind", kind, "err", err)
			continue
		}
		vk, hdr, err := e.formatWith(vol, dev, size, ck, enr, uuid)
		enr.Zero()
		end := e.now()
		res.Attempts = append(res.Attempts, Attempt{Slot: ck.Slot, Kind: kind, Err: err, Duration: end.Sub(start),
			KeyDuration: fetched.Sub(start), KDFDuration: end.Sub(fetched)})
		if err != nil {
			return nil, fmt.Errorf("format %s with slot %d (%s): %w", vol.ID, ck.Slot, kind, err)
		}
		res.VolumeKey, res.Slot, res.Kind, res.UUID = vk, ck.Slot, kind, hdr.UUID
		if e.Journal != nil && !e.KeepFormatRecord {
			if err := e.Journal.End(vol.ID); err != nil {
				res.Zero()
				return nil, fmt.Errorf("format %s: the volume is formatted, but: %w (stopping before it is used: a stale record could let a later boot take it for an unfinished format)", vol.ID, err)
			}
		}
		e.log().Info("formatted", "volume", vol.ID, "slot", ck.Slot, "kind", kind, "uuid", hdr.UUID)
		if err := e.fillMapping(res, vol, hdr); err != nil {
			res.Zero()
			return nil, err
		}
		res.Sync = e.Sync(ctx, *vol, dev, res)
		return res, nil
	}
	return nil, &OpenError{Volume: vol.ID, Op: "format", Attempts: res.Attempts, Err: ErrNoKeyEnrolls}
}

// newUUID is a random version 4 UUID from e.Rand.
func (e *Engine) newUUID() (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(e.rand(), b[:]); err != nil {
		return "", fmt.Errorf("LUKS2 UUID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

func (e *Engine) rand() io.Reader {
	if e.Rand != nil {
		return e.Rand
	}
	return rand.Reader
}

// formatWith writes the header with ck's keyslot and then its token, and
// advances the journal after each. When luks2.Format fails before its
// first write, the record Begin made is removed (End); once anything was
// written the record stays: that torn format is what a redo is for.
func (e *Engine) formatWith(vol *config.Volume, dev luks2.Device, size int64, ck config.Key, enr *keys.Enrollment, uuid string) ([]byte, *luks2.Header, error) {
	enc := vol.Encryption
	keySize := enc.KeySize
	if keySize == 0 {
		keySize = 512
	}
	vk := make([]byte, keySize/8)
	if _, err := io.ReadFull(e.rand(), vk); err != nil {
		return nil, nil, fmt.Errorf("volume key: %w", err)
	}
	opts := luks2.FormatOptions{
		Slot:       ck.Slot,
		Cipher:     enc.Cipher,
		KeySize:    keySize,
		SectorSize: enc.BlockSize,
		KDF:        kdfFor(enc),
		VolumeKey:  vk,
		UUID:       uuid,

		DigestIterations: e.digestIterations,
	}
	fail := func(err error) ([]byte, *luks2.Header, error) {
		keys.Zero(vk)
		return nil, nil, err
	}
	tok, err := slotToken(ck, enr.Token)
	if err != nil {
		return fail(err)
	}
	if e.Journal != nil {
		if err := e.Journal.Begin(meta.Record{Volume: vol.ID, UUID: uuid, Slot: ck.Slot, Token: tok != nil}); err != nil {
			return fail(fmt.Errorf("%w (nothing was written to the volume)", err))
		}
	}
	w := &writeWatch{Device: dev}
	hdr, err := luks2.Format(w, size, enr.Passphrase, opts)
	if err != nil && !w.tried && e.Journal != nil {
		// nothing was written: the "begun" record would only be a stale
		// license to wipe whatever lands on the partition later
		if jerr := e.Journal.End(vol.ID); jerr != nil {
			return fail(fmt.Errorf("%w (nothing was written to the volume; its format record stays: %v)", err, jerr))
		}
	}
	if err != nil {
		return fail(err)
	}
	if err := e.advance(vol.ID, meta.StageHeader); err != nil {
		return fail(err)
	}
	if tok != nil {
		if _, err := luks2.ImportToken(dev, ck.Slot, tok, true); err != nil {
			return fail(fmt.Errorf("store token %d: %w", ck.Slot, err))
		}
		if err := e.advance(vol.ID, meta.StageToken); err != nil {
			return fail(err)
		}
		if hdr, err = luks2.ReadHeader(dev); err != nil {
			return fail(err)
		}
	}
	return vk, hdr, nil
}

// writeWatch remembers whether a write was tried on a device (even one
// that failed: it may have torn the bytes it covered).
type writeWatch struct {
	luks2.Device
	tried bool
}

func (w *writeWatch) WriteAt(p []byte, off int64) (int, error) {
	w.tried = true
	return w.Device.WriteAt(p, off)
}

func (e *Engine) advance(id, stage string) error {
	if e.Journal == nil {
		return nil
	}
	return e.Journal.Advance(id, stage)
}

// slotToken is the token to store with id == slot for a configured key:
// the kind's token, marked when the key is a recovery key.
func slotToken(ck config.Key, token []byte) ([]byte, error) {
	if ck.Recovery {
		return keys.RecoveryToken(token)
	}
	return token, nil
}

// newSlotKDF is the KDF a new keyslot of vol gets, or an error wrapping
// luks2.ErrKDFTooCostly when this machine cannot afford it (Engine.KDFLimits):
// deriving it would end PID 1 in an out-of-memory crash, which Go cannot
// recover from.
func (e *Engine) newSlotKDF(vol *config.Volume) (luks2.KDF, error) {
	kdf := kdfFor(vol.Encryption)
	keyBits := vol.Encryption.KeySize
	if keyBits == 0 {
		keyBits = 512
	}
	if err := e.KDFLimits.Allow(kdf.Cost(keyBits / 8)); err != nil {
		return kdf, fmt.Errorf("the kdf of new key slots in its config: %w (lower kdf.memoryKiB or kdf.iterations)", err)
	}
	return kdf, nil
}

// KDFFor is the KDF new key slots of a volume with enc get (for display).
func KDFFor(enc *config.Encryption) luks2.KDF { return kdfFor(enc) }

// kdfFor turns the config's KDF costs into LUKS2's, defaults for the rest.
func kdfFor(enc *config.Encryption) luks2.KDF {
	kdf := luks2.DefaultKDF()
	c := enc.KDF
	if c == nil {
		return kdf
	}
	if c.Type != "" {
		kdf.Type = c.Type
	}
	if kdf.Type == "pbkdf2" {
		kdf.Hash = "sha256"
		kdf.Iterations = c.Iterations
		if kdf.Iterations == 0 {
			kdf.Iterations = 600000
		}
		kdf.Memory, kdf.Time, kdf.Parallel = 0, 0, 0
		return kdf
	}
	if c.MemoryKiB > 0 {
		kdf.Memory = c.MemoryKiB
	}
	if c.Iterations > 0 {
		kdf.Time = c.Iterations
	}
	if c.Parallelism > 0 {
		kdf.Parallel = c.Parallelism
	}
	return kdf
}
