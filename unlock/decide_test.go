package unlock

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

const recUUID = "5d1e0f6a-3b2c-4d5e-8f70-112233445566"

// allObserved calls f with every combination of decide's inputs: header
// state x header UUID x first keyslot/token/other slots x journal state x
// record stage and token x probe x every list of up to two key outcomes x
// read error.
func allObserved(f func(observed)) {
	uuids := []string{"", recUUID, "0a0a0a0a-0000-4000-8000-000000000000", "several"}
	outcomes := []keyOutcome{keyOpened, keyUnavailable, keyWrong, keyTimedOut}
	keyLists := [][]keyOutcome{nil}
	for _, a := range outcomes {
		keyLists = append(keyLists, []keyOutcome{a})
		for _, b := range outcomes {
			keyLists = append(keyLists, []keyOutcome{a, b})
		}
	}
	bools := []bool{false, true}
	for h := headerNone; h <= headerUnreadable; h++ {
		for _, uuid := range uuids {
			for _, slot := range bools {
				for _, tok := range bools {
					for _, other := range bools {
						for j := journalNone; j <= journalUnreadable; j++ {
							for _, stage := range []string{meta.StageBegun, meta.StageHeader, meta.StageToken} {
								for _, needTok := range bools {
									for p := probeEmpty; p <= probeUnreadable; p++ {
										for _, ks := range keyLists {
											for _, ioErr := range bools {
												for _, auth := range bools {
													o := observed{header: h, uuid: uuid, firstSlot: slot, firstToken: tok, otherSlots: other,
														journal: j, probe: p, keys: ks, ioErr: ioErr, authenticated: auth}
													if j == journalRecord {
														o.record = &meta.Record{Volume: "EPHEMERAL", UUID: recUUID, Slot: 3, Token: needTok, Stage: stage}
													}
													f(o)
												}
											}
										}
									}
								}
							}
						}
					}
				}
			}
		}
	}
}

// wantDecision restates decide's doc comment, rule by rule.
func wantDecision(o observed) (action, error) {
	act, err := wantChoice(o)
	if (act == actFormat || act == actRedo) && !o.authenticated {
		return actRefuse, ErrFormatNotAuthenticated
	}
	return act, err
}

func wantChoice(o observed) (action, error) {
	opened := slices.Contains(o.keys, keyOpened)
	r := o.record
	switch {
	case o.header == headerValid && opened:
		return actOpen, nil
	case o.ioErr || o.header == headerUnreadable:
		return actRefuse, errUnreadable
	case o.header == headerValid:
		if r != nil && o.uuid == r.UUID && !o.otherSlots {
			slotGone := !o.firstSlot && r.Stage == meta.StageBegun
			tokenGone := r.Token && !o.firstToken && (r.Stage == meta.StageBegun || r.Stage == meta.StageHeader)
			if slotGone || tokenGone {
				return actRedo, nil
			}
		}
		return actRefuse, ErrNoKeyOpens
	case o.probe == probeUnreadable:
		return actRefuse, errUnreadable
	case o.header == headerNone && o.probe == probeEmpty && o.journal == journalUnreadable:
		return actRefuse, meta.ErrJournalUnreadable
	case o.header == headerNone && o.probe == probeEmpty:
		return actFormat, nil
	case r != nil && r.Stage == meta.StageBegun && o.probe == probeOurs && (o.uuid == "" || o.uuid == r.UUID):
		return actRedo, nil
	}
	return actRefuse, probe.ErrNotEmpty
}

// TestDecideExhaustive checks decide on every combination of its inputs:
// against the rules restated, and for the properties that keep data safe.
func TestDecideExhaustive(t *testing.T) {
	n := 0
	count := map[action]int{}
	allObserved(func(o observed) {
		n++
		d := decide(o)
		count[d.action]++
		name := fmt.Sprintf("%+v record %+v", o, o.record)
		act, refusal := wantDecision(o)
		if d.action != act || (refusal != nil && !errors.Is(d.refusal, refusal)) || (refusal == nil) != (d.refusal == nil) {
			t.Fatalf("%s: decide = %v (%v: %s), want %v (%v)", name, d.action, d.refusal, d.reason, act, refusal)
		}
		if d.reason == "" {
			t.Fatalf("%s: no reason", name)
		}
		if d.clearRecord != (d.action == actOpen && o.journal == journalRecord) {
			t.Fatalf("%s: clearRecord %v", name, d.clearRecord)
		}
		// what may lead to a write
		switch d.action {
		case actRedo:
			// (keys are tried only on a valid header)
			if !o.authenticated || o.journal != journalRecord || o.ioErr || (o.header == headerValid && slices.Contains(o.keys, keyOpened)) {
				t.Fatalf("%s: redo without a readable record, after a read error or with a key that opened", name)
			}
			if o.header == headerValid && o.uuid != o.record.UUID {
				t.Fatalf("%s: redo over a header the record does not name", name)
			}
			if o.header == headerValid && o.firstSlot && (!o.record.Token || o.firstToken) {
				t.Fatalf("%s: redo of a complete header", name)
			}
		case actFormat:
			if !o.authenticated {
				t.Fatalf("%s: format from a config that is not authenticated", name)
			}
			if o.header != headerNone || o.probe != probeEmpty || o.ioErr {
				t.Fatalf("%s: format of a partition that is not empty", name)
			}
		case actOpen:
			if !slices.Contains(o.keys, keyOpened) {
				t.Fatalf("%s: open without a key that opened", name)
			}
		}
		// keys that did not open never change the decision: drop them,
		// or make every one of them any other failure
		for _, alt := range [][]keyOutcome{nil, failedAs(o.keys, keyUnavailable), failedAs(o.keys, keyWrong), failedAs(o.keys, keyTimedOut)} {
			if slices.Contains(o.keys, keyOpened) {
				break
			}
			o2 := o
			o2.keys = alt
			if d2 := decide(o2); d2.action != d.action || d2.refusal != d.refusal {
				t.Fatalf("%s: keys %v give %v, keys %v give %v", name, o.keys, d.action, alt, d2.action)
			}
		}
	})
	t.Logf("decide: %d combinations: %d open, %d format, %d redo, %d refuse", n, count[actOpen], count[actFormat], count[actRedo], count[actRefuse])
	if n < 100000 || count[actRedo] == 0 || count[actFormat] == 0 || count[actOpen] == 0 {
		t.Fatalf("enumeration too small: %d %v", n, count)
	}
}

func failedAs(ks []keyOutcome, k keyOutcome) []keyOutcome {
	out := make([]keyOutcome, len(ks))
	for i := range out {
		out[i] = k
	}
	return out
}

// Named cases: the situations the rules are for.
func TestDecideCases(t *testing.T) {
	rec := func(stage string, token bool) *meta.Record {
		return &meta.Record{Volume: "EPHEMERAL", UUID: recUUID, Slot: 0, Token: token, Stage: stage}
	}
	complete := observed{header: headerValid, uuid: recUUID, firstSlot: true, firstToken: true}
	withRec := func(o observed, r *meta.Record) observed { o.journal, o.record = journalRecord, r; return o }
	withKeys := func(o observed, ks ...keyOutcome) observed { o.keys = ks; return o }
	noToken := complete
	noToken.firstToken = false
	for _, c := range []struct {
		name string
		o    observed
		want action
	}{
		{"first boot: empty partition", observed{header: headerNone, probe: probeEmpty, journal: journalClean}, actFormat},
		{"empty partition, no META", observed{header: headerNone, probe: probeEmpty}, actFormat},
		{"empty partition, config not authenticated", observed{header: headerNone, probe: probeEmpty, journal: journalClean, authenticated: false}, actRefuse},
		{"empty partition, journal not ours", observed{header: headerNone, probe: probeEmpty, journal: journalUnreadable}, actRefuse},
		{"filesystem, no record", observed{header: headerNone, probe: probeForeign, journal: journalClean}, actRefuse},
		{"filesystem, record begun", withRec(observed{header: headerNone, probe: probeForeign}, rec(meta.StageBegun, false)), actRefuse},
		{"keyslot area written, record begun", withRec(observed{header: headerNone, probe: probeOurs}, rec(meta.StageBegun, false)), actRedo},
		{"keyslot area written, no record", observed{header: headerNone, probe: probeOurs, journal: journalClean}, actRefuse},
		{"torn header, record begun", withRec(observed{header: headerTorn, uuid: recUUID, probe: probeOurs}, rec(meta.StageBegun, true)), actRedo},
		{"torn header of another volume", withRec(observed{header: headerTorn, uuid: "other", probe: probeOurs}, rec(meta.StageBegun, true)), actRefuse},
		{"torn header after the header was written", withRec(observed{header: headerTorn, uuid: recUUID, probe: probeOurs}, rec(meta.StageHeader, true)), actRefuse},
		{"KMS down, finished format, stale record", withKeys(withRec(complete, rec(meta.StageHeader, true)), keyUnavailable), actRefuse},
		{"KMS times out, stale record at begun", withKeys(withRec(complete, rec(meta.StageBegun, true)), keyTimedOut), actRefuse},
		{"KMS back, stale record", withKeys(withRec(complete, rec(meta.StageToken, true)), keyOpened), actOpen},
		{"token never written", withKeys(withRec(noToken, rec(meta.StageHeader, true)), keyUnavailable), actRedo},
		{"token removed after it was written", withKeys(withRec(noToken, rec(meta.StageToken, true)), keyUnavailable), actRefuse},
		{"token never written, other UUID", withKeys(withRec(observed{header: headerValid, uuid: "other", firstSlot: true}, rec(meta.StageHeader, true)), keyWrong), actRefuse},
		{"token never written, journal unreadable", withKeys(observed{header: headerValid, uuid: recUUID, firstSlot: true, journal: journalUnreadable}, keyUnavailable), actRefuse},
		{"token never written, read error", func() observed { o := withRec(noToken, rec(meta.StageHeader, true)); o.ioErr = true; return o }(), actRefuse},
		{"header unreadable, record begun", withRec(observed{header: headerUnreadable}, rec(meta.StageBegun, true)), actRefuse},
	} {
		if !strings.Contains(c.name, "not authenticated") {
			c.o.authenticated = true
		}
		if d := decide(c.o); d.action != c.want {
			t.Errorf("%s: %v (%s), want %v", c.name, d.action, d.reason, c.want)
		}
	}
}
