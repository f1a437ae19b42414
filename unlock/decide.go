package unlock

import (
	"errors"
	"fmt"

	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// What Unlock and Format observe before they write anything; decide turns
// it into one action. observe (engine.go) fills it, execute performs it.

type headerState int

const (
	headerNone       headerState = iota // no LUKS signature anywhere
	headerTorn                          // a LUKS signature, no valid copy
	headerValid                         // a valid LUKS header
	headerUnreadable                    // a read error while reading it
)

type probeState int

const (
	probeEmpty      probeState = iota // all zero, no signature: may be formatted
	probeOurs                         // non-zero bytes, no signature but LUKS
	probeForeign                      // a signature other than LUKS
	probeUnreadable                   // a read error
)

type journalState int

const (
	journalNone       journalState = iota // the engine has no journal (no META)
	journalClean                          // no record for this volume
	journalRecord                         // a record for this volume
	journalUnreadable                     // the journal cannot be read or parsed
)

type keyOutcome int

const (
	keyOpened keyOutcome = iota
	keyUnavailable
	keyWrong
	keyTimedOut
)

// observed is everything the decision depends on.
type observed struct {
	header headerState
	// uuid is the valid header's UUID; for a torn one the UUID its binary
	// header copies name ("" when none does, "several" when they differ).
	uuid string
	// For a valid header and a journal record: whether the record's keyslot
	// and its token (id == slot) are present, and whether any other
	// keyslot is.
	firstSlot, firstToken, otherSlots bool
	journal                           journalState
	record                            *meta.Record // journalRecord only
	probe                             probeState   // when the header is not valid
	keys                              []keyOutcome // each key tried, in order
	ioErr                             bool         // any read error while observing
	// authenticated: the volume's config comes from a source an attacker
	// holding the disk cannot write (config.Trust); only such a config
	// may choose the keys of a new volume.
	authenticated bool
}

type action int

const (
	actOpen action = iota
	actFormat
	actRedo
	actRefuse
)

func (a action) String() string {
	return [...]string{"open", "format", "redo format", "refuse"}[a]
}

// ErrFormatNotAuthenticated: the partition would be formatted (or an
// interrupted format redone), but its config is not authenticated
// (config.Trust): a format lets the config choose the keys that protect
// the data written next, so nothing is written.
var ErrFormatNotAuthenticated = errors.New("not formatted: the config that would choose its keys is not authenticated")

// errUnreadable: the volume could not be read, so nothing is decided on it.
var errUnreadable = errors.New("read error on the volume")

type decision struct {
	action      action
	clearRecord bool   // open: remove the journal record (its format is done)
	refusal     error  // refuse: ErrNoKeyOpens, probe.ErrNotEmpty, errUnreadable, meta.ErrJournalUnreadable
	reason      string // for the log and the error
}

// decide is the one place that chooses to write to a volume. It writes:
//   - open: a key opened a valid header. Sync then runs, and a journal
//     record of this volume is removed (its format is complete).
//   - format: no LUKS signature, probe finds the partition empty, and the
//     journal is readable (or there is none).
//   - redo (wipe the LUKS2 header area and the last MiB, then format): the
//     journal has a record for this volume, nothing read failed, no key
//     opened, and either (a) no valid header, the record's stage is
//     "begun", probe found only LUKS signatures or non-zero bytes and a
//     torn header names no UUID but the record's; or (b) the header has
//     the record's UUID, no keyslot but the record's, and never finished:
//     the record's keyslot is absent (stage "begun"), or its key needs a
//     token and that token is absent (stage "begun" or "header").
//
// A format and a redo both also need an authenticated config: a format
// chooses the keys that protect what is written next, as an enrollment
// does (ErrFormatNotAuthenticated otherwise). Anything else refuses and writes
// nothing. Only a key that opened a valid
// header changes the outcome: unavailable, wrong or timed-out keys never
// do (keys are tried only on a valid header).
func decide(o observed) decision {
	d := choose(o)
	if (d.action == actFormat || d.action == actRedo) && !o.authenticated {
		return refuse(ErrFormatNotAuthenticated, "it would be a "+d.action.String()+" ("+d.reason+"), which chooses its keys")
	}
	return d
}

// choose is decide before the trust rule.
func choose(o observed) decision {
	opened := false
	for _, k := range o.keys {
		opened = opened || k == keyOpened
	}
	rec := o.record
	if o.journal != journalRecord {
		rec = nil
	}
	switch {
	case o.header == headerValid && opened:
		return decision{action: actOpen, clearRecord: rec != nil, reason: "a key opened it"}
	case o.ioErr || o.header == headerUnreadable || (o.header != headerValid && o.probe == probeUnreadable):
		return refuse(errUnreadable, "a read failed")
	case o.header == headerValid && rec != nil && o.uuid == rec.UUID && !o.otherSlots &&
		((!o.firstSlot && rec.Stage == meta.StageBegun) ||
			(rec.Token && !o.firstToken && rec.Stage != meta.StageToken)):
		return decision{action: actRedo, reason: fmt.Sprintf("the header our format wrote (UUID %s, stage %q) lacks its first key's keyslot %d or token", rec.UUID, rec.Stage, rec.Slot)}
	case o.header == headerValid:
		return refuse(ErrNoKeyOpens, "no key opened the header")
	case o.header == headerNone && o.probe == probeEmpty && o.journal == journalUnreadable:
		return refuse(meta.ErrJournalUnreadable, "a format could not be journalled")
	case o.header == headerNone && o.probe == probeEmpty:
		return decision{action: actFormat, reason: "the partition is empty"}
	case rec != nil && rec.Stage == meta.StageBegun && o.probe == probeOurs && (o.uuid == "" || o.uuid == rec.UUID):
		return decision{action: actRedo, reason: fmt.Sprintf("our format (UUID %s) was cut short before its header was complete", rec.UUID)}
	}
	return refuse(probe.ErrNotEmpty, "it holds no valid LUKS2 header and no format of ours left it so")
}

func refuse(err error, reason string) decision {
	return decision{action: actRefuse, refusal: err, reason: reason}
}
