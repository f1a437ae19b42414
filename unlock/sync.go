package unlock

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// SyncReport says what Sync changed and what it could not do.
type SyncReport struct {
	Added    []int // configured slots that were empty and got their key
	Replaced []int // configured slots whose key no longer opened them
	Removed  []int // slots the config does not name
	Kept     []int // slots the config does not name, kept as recovery keys
	// Foreign are slots with a token another tool wrote (clevis,
	// systemd-tpm2, any type cryptinit does not write): never re-keyed nor
	// removed, whether configured or not (Reasons says which token).
	Foreign []int
	// Reasons says why a slot was written when it is not the usual stale
	// key, e.g. "tpm re-enrolled: PCR 7 changed".
	Reasons  map[int]string
	Problems []error // each names the slot; never fatal
	// Skipped lists the slot changes the config asks for that Sync did not
	// make, e.g. "add slot 5 (static)": the config is not authenticated
	// (see config.Trust), or the key budget ran out. Each is also a Problem
	// that says why.
	Skipped []string
	// Warnings are facts the operator should know that need no write,
	// e.g. a tpm slot that opens through another tool's token without
	// PCR 15 in its policy (warnUnlatched).
	Warnings []string
	// UpToDate: nothing changed since the last full sync (its fingerprint
	// matched), so no key was checked.
	UpToDate bool
}

// Changed reports whether Sync wrote anything.
func (r *SyncReport) Changed() bool {
	return len(r.Added)+len(r.Replaced)+len(r.Removed) > 0
}

func (r *SyncReport) String() string {
	var parts []string
	add := func(what string, slots []int) {
		if len(slots) > 0 {
			parts = append(parts, fmt.Sprintf("%s %v", what, slots))
		}
	}
	add("added", r.Added)
	add("replaced", r.Replaced)
	for _, s := range r.Replaced {
		if why, ok := r.Reasons[s]; ok {
			parts = append(parts, fmt.Sprintf("slot %d: %s", s, why))
		}
	}
	add("removed", r.Removed)
	add("kept recovery", r.Kept)
	add("kept foreign", r.Foreign)
	for _, s := range r.Foreign {
		parts = append(parts, fmt.Sprintf("slot %d: %s", s, r.Reasons[s]))
	}
	if len(r.Skipped) > 0 {
		parts = append(parts, "skipped: "+strings.Join(r.Skipped, ", "))
	}
	for _, p := range r.Problems {
		parts = append(parts, "problem: "+p.Error())
	}
	out := strings.Join(parts, "; ")
	switch {
	case len(parts) == 0 && r.UpToDate:
		out = "in sync (unchanged since the last check)"
	case len(parts) == 0:
		out = "in sync"
	}
	for _, w := range r.Warnings {
		out += "; warning: " + w
	}
	return out
}

// warnUnlatched logs one line (and adds a report warning) for each
// configured tpm key whose slot opens through another tool's token whose
// policy does not bind PCR 15: that slot still unseals after the latch, in
// the debug shell and the running system (README, threat model). It
// writes nothing.
func (e *Engine) warnUnlatched(vol *config.Volume, dev luks2.Device, ks []config.Key, rep *SyncReport) {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		return
	}
	for _, ck := range ks {
		if ck.TPM == nil {
			continue
		}
		typ, pcrs, unlatched := keys.UnlatchedForeignToken(keys.Slot{VolumeID: vol.ID, Slot: ck.Slot, Token: tokenFor(hdr, ck.Slot), Assigned: assignedTokens(hdr, ck.Slot)})
		if !unlatched {
			continue
		}
		w := fmt.Sprintf("%s slot %d (tpm) opens through its %s token, whose policy binds PCRs %v but not PCR 15: it still unseals after the latch (debug shell, running system); to bind PCR 15, remove that slot and its token (cryptsetup luksKillSlot, token remove) and let sync enroll the tpm key",
			vol.ID, ck.Slot, typ, pcrs)
		rep.Warnings = append(rep.Warnings, w)
		e.log().Warn("tpm slot not bound to PCR 15", "volume", vol.ID, "slot", ck.Slot, "warning", w)
	}
}

// ownedTokens are the token types that belong to a keyslot by id == slot,
// so they go when their slot goes.
var ownedTokens = []string{keys.TokenKMS, keys.TokenTPM, keys.TokenRecovery}

// isForeign reports whether a token type is one cryptinit does not write
// (clevis, systemd-tpm2, luks2-keyring, ...): its slot is another tool's.
func isForeign(typ string) bool {
	return typ != "" && typ != TokenSyncState && !slices.Contains(ownedTokens, typ)
}

// ForeignToken returns the type of a token another tool wrote whose
// keyslots list slot, or "" when there is none. Sync never writes such a
// slot; a plan of what sync would do (cryptctl) should say "keep" for it.
func ForeignToken(hdr *luks2.Header, slot int) string {
	for id := 0; id < luks2.MaxTokens; id++ {
		if t, ok := hdr.Tokens[id]; ok && isForeign(t.Type) && slices.Contains(t.Keyslots, slot) {
			return t.Type
		}
	}
	return ""
}

// keepForeign reports a slot kept because its token is another tool's.
func (r *SyncReport) keepForeign(slot int, typ string) {
	r.Foreign = append(r.Foreign, slot)
	r.reason(slot, fmt.Sprintf("its %s token is another tool's: slot and token kept as they are", typ))
}

// DefaultSyncKeyBudget is how long, in total per volume, Sync may spend on
// keys that did not open the volume (KMS round trips, TPM unseals and
// seals): enough for a TPM seal under emulation, far below the 2 x
// DefaultKeyTimeout a KMS outage used to cost every boot.
const DefaultSyncKeyBudget = 10 * time.Second

// ErrNotAuthenticated: the config may open the volume but not change its
// key slots (see config.Trust); Sync reports the changes it skipped with it.
var ErrNotAuthenticated = errors.New("slot changes skipped")

// ErrSyncBudget: a key did not answer within the volume's sync key budget;
// its slot is left as it is and checked again at the next boot.
var ErrSyncBudget = errors.New("sync key budget ran out")

func (e *Engine) syncKeyBudget() time.Duration {
	if e.SyncKeyBudget > 0 {
		return e.SyncKeyBudget
	}
	return DefaultSyncKeyBudget
}

// Sync brings the volume's keyslots in line with the config, using the
// volume key of opened (from Open or Format). It writes only when the
// config is authenticated (vol.Trust; otherwise it reports what it skipped,
// see syncUnauthenticated), and then only:
//   - a configured slot that is empty: its key is enrolled;
//   - a configured slot its key no longer opens (wrong key, missing token,
//     or a token of another kind cryptinit writes, e.g. sideroKMS where a
//     tpm key is configured) or, when opted in with Secure Boot on, whose tpm key
//     no longer unseals after a PCR 7 change: re-keyed in place;
//   - a configured recovery key's slot without the recovery mark: marked;
//   - a slot the config does not name and that is neither the opener nor a
//     recovery key: removed, after every add and replacement;
//   - after a sync without problems: the fingerprint token (syncstate.go).
//
// Whatever the config says, a slot listed by a token another tool wrote
// (clevis, systemd-tpm2, any type cryptinit does not write: ForeignToken)
// is never re-keyed, removed or marked, and no token of such a type is
// overwritten: the slot is kept and reported in Foreign, not as a problem.
// Its key is not checked either (sync would not act on the answer); a
// configured tpm key that opens it without PCR 15 in the token's policy
// only gets a warning (warnUnlatched).
//
// A key that does not answer within the sync key budget (SyncKeyBudget,
// for all keys of the volume together) is skipped, never taken as wrong.
// The order keeps the volume openable by a configured key after a crash at
// any write: the slot that opened it is never modified, and a replacement
// key is created (KMS/TPM sealed) before its slot is re-keyed in place.
func (e *Engine) Sync(ctx context.Context, vol config.Volume, dev luks2.Device, opened *Result) *SyncReport {
	rep := &SyncReport{}
	problem := func(slot int, kind string, format string, args ...any) {
		err := fmt.Errorf("sync %s slot %d (%s): %w", vol.ID, slot, kind, fmt.Errorf(format, args...))
		rep.Problems = append(rep.Problems, err)
		e.log().Warn("sync problem", "volume", vol.ID, "slot", slot, "kind", kind, "err", err)
	}
	// every key operation below counts against one budget; the opener's
	// key is never asked again
	bctx, cancelBudget := context.WithTimeout(ctx, e.syncKeyBudget())
	defer cancelBudget()
	skipped := func(slot int, kind, what string) {
		rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s slot %d (%s)", what, slot, kind))
	}
	overBudget := func(slot int, kind, what string) {
		skipped(slot, kind, what)
		problem(slot, kind, "%w after %s: slot left as it is (the next boot checks it again; is the KMS or TPM slow or unreachable?)", ErrSyncBudget, e.syncKeyBudget())
	}
	// enroll under the budget: a key that could not be created in time is
	// skipped (enroll reported it), not written
	enroll := func(ck config.Key, k keys.Key, replace bool, what string) bool {
		kdf, err := e.newSlotKDF(&vol)
		if err != nil {
			problem(ck.Slot, k.Kind(), "%w: slot left as it is", err)
			return false
		}
		if e.enroll(bctx, vol.ID, dev, ck, k, opened.VolumeKey, kdf, replace, problem) {
			return true
		}
		if bctx.Err() != nil {
			skipped(ck.Slot, k.Kind(), what)
		}
		return false
	}
	ks, err := configuredKeys(&vol)
	if err != nil || opened == nil || len(opened.VolumeKey) == 0 {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: nothing to sync with (%v)", vol.ID, err))
		return rep
	}
	e.warnUnlatched(&vol, dev, ks, rep)
	if hdr, err := luks2.ReadHeader(dev); err == nil && hdr.Version != 2 {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: LUKS%d volume: keyslots left as they are (cryptinit writes LUKS2 only; convert with cryptsetup convert --type luks2)", vol.ID, hdr.Version))
		return rep
	}
	if !vol.Trust.Authenticated {
		e.syncUnauthenticated(&vol, dev, ks, opened, rep)
		return rep
	}
	vk := opened.VolumeKey
	configured := map[int]bool{}
	for _, ck := range ks {
		configured[ck.Slot] = true
	}
	if hdr, err := luks2.ReadHeader(dev); err == nil && !failedBeforeOpener(opened, hdr) {
		if _, stored := storedFingerprint(hdr); stored != nil {
			if fp := e.syncFingerprint(bctx, &vol, hdr, ks, vk, opened.Slot); fp != nil && hmac.Equal(fp, stored) {
				rep.UpToDate = true
				return rep
			}
		}
	}
	defer func() {
		// remember a clean state so that the next boot can skip the checks
		if len(rep.Problems) > 0 || ctx.Err() != nil {
			return
		}
		hdr, err := luks2.ReadHeader(dev)
		if err != nil {
			return
		}
		if fp := e.syncFingerprint(bctx, &vol, hdr, ks, vk, opened.Slot); fp != nil {
			if err := storeFingerprint(dev, hdr, fp, configured); err != nil {
				e.log().Warn("sync fingerprint not stored", "volume", vol.ID, "err", err)
			}
		}
	}()
	// what Open already learnt about the slots tried before the opener
	known := map[int]error{}
	for _, a := range opened.Attempts {
		if a.Slot != opened.Slot && !opened.Formatted {
			known[a.Slot] = a.Err
		}
	}
	for _, ck := range ks {
		if ctx.Err() != nil {
			problem(ck.Slot, ck.Kind(), "stopped: %v", ctx.Err())
			return rep
		}
		hdr, err := luks2.ReadHeader(dev)
		if err != nil {
			problem(ck.Slot, ck.Kind(), "read header: %v", err)
			return rep
		}
		k, err := keys.FromConfig(ck, e.env())
		if err != nil {
			problem(ck.Slot, ck.Kind(), "%v", err)
			continue
		}
		if ck.Slot == opened.Slot {
			e.markRecovery(vol.ID, dev, hdr, ck, problem)
			continue
		}
		if typ := ForeignToken(hdr, ck.Slot); typ != "" {
			rep.keepForeign(ck.Slot, typ)
			continue
		}
		if _, present := hdr.Keyslots[ck.Slot]; !present {
			if enroll(ck, k, false, "add") {
				rep.Added = append(rep.Added, ck.Slot)
			}
			continue
		}
		checkErr, tried := known[ck.Slot]
		if !tried {
			var other []byte
			other, checkErr = e.tryKey(bctx, vol.ID, k, ck.Slot, hdr, dev)
			keys.Zero(other)
		}
		switch {
		case checkErr == nil:
			e.markRecovery(vol.ID, dev, hdr, ck, problem)
		case errors.Is(checkErr, keys.ErrWrongKey), errors.Is(checkErr, keys.ErrNoToken), errors.Is(checkErr, keys.ErrBadToken):
			if enroll(ck, k, true, "replace") {
				rep.Replaced = append(rep.Replaced, ck.Slot)
			}
		case !tried && bctx.Err() != nil:
			// the key did not answer in time: not wrong, just unknown
			overBudget(ck.Slot, k.Kind(), "check")
		case errors.Is(checkErr, keys.ErrSealedStateChanged):
			if why := e.reenrollRefusal(bctx, ck); why != "" {
				problem(ck.Slot, k.Kind(), "the TPM no longer unseals the key because PCR 7 changed; slot left as it is (%s): %v", why, checkErr)
			} else if enroll(ck, k, true, "re-enroll") {
				rep.Replaced = append(rep.Replaced, ck.Slot)
				rep.reason(ck.Slot, "tpm re-enrolled: PCR 7 changed")
			}
		default:
			problem(ck.Slot, k.Kind(), "cannot check the key, slot left as it is: %v", checkErr)
		}
	}

	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: read header: %w", vol.ID, err))
		return rep
	}
	slots := make([]int, 0, len(hdr.Keyslots))
	for s := range hdr.Keyslots {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	for _, s := range slots {
		if configured[s] || s == opened.Slot {
			continue
		}
		if keys.IsRecovery(tokenFor(hdr, s)) {
			rep.Kept = append(rep.Kept, s)
			continue
		}
		if typ := ForeignToken(hdr, s); typ != "" {
			rep.keepForeign(s, typ)
			continue
		}
		if err := luks2.KillKeyslot(dev, s); err != nil {
			problem(s, "unconfigured", "remove: %v", err)
			continue
		}
		rep.Removed = append(rep.Removed, s)
		e.log().Info("removed keyslot not in config", "volume", vol.ID, "slot", s)
		e.dropOwnedToken(vol.ID, dev, s, problem)
	}
	return rep
}

// reenrollRefusal says why a tpm slot whose PCR 7 changed must not be
// re-sealed now, or "" when it may: the key opts in and Secure Boot is on
// (re-sealing with it off would bind the key to an unprotected boot chain).
// The caller has ensured another key opened the volume.
func (e *Engine) reenrollRefusal(ctx context.Context, ck config.Key) string {
	if ck.TPM == nil || !ck.TPM.ReenrollOnPCRChange {
		return "set tpm.reenrollOnPCRChange: true to re-seal it after a Secure Boot key update, or re-enroll it"
	}
	sb := e.env().SecureBoot
	if sb == nil {
		return "Secure Boot state unknown: not re-enrolled"
	}
	kctx, cancel := e.keyContext(ctx)
	on, err := sb.SecureBootEnabled(kctx)
	cancel()
	if err != nil {
		return fmt.Sprintf("Secure Boot state unknown (%v): not re-enrolled", err)
	}
	if !on {
		return "Secure Boot is off: not re-enrolled; turn it on and boot again"
	}
	return ""
}

func (r *SyncReport) reason(slot int, why string) {
	if r.Reasons == nil {
		r.Reasons = map[int]string{}
	}
	r.Reasons[slot] = why
}

// enroll creates ck's key and writes it to its slot: token first, then the
// keyslot, so a crash leaves at worst an orphan token that the next sync
// replaces. With replace, the new key exists (KMS/TPM sealed) before the
// slot is touched, and the slot is re-keyed in one crash-safe step.
func (e *Engine) enroll(ctx context.Context, volID string, dev luks2.Device, ck config.Key, k keys.Key,
	vk []byte, kdf luks2.KDF, replace bool, problem func(int, string, string, ...any)) bool {
	kctx, cancel := e.keyContext(ctx)
	enr, err := k.Enroll(kctx, keys.Slot{VolumeID: volID, Slot: ck.Slot})
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ErrSyncBudget, err)
		}
		problem(ck.Slot, k.Kind(), "cannot create the key, slot left as it is: %w", err)
		return false
	}
	defer enr.Zero()
	tok, err := slotToken(ck, enr.Token)
	if err != nil {
		problem(ck.Slot, k.Kind(), "token: %v", err)
		return false
	}
	if tok != nil {
		if hdr, err := luks2.ReadHeader(dev); err == nil && isForeign(keys.TokenType(tokenFor(hdr, ck.Slot))) {
			problem(ck.Slot, k.Kind(), "token id %d holds a %s token another tool wrote; slot left as it is (move that token: cryptsetup token export/import)",
				ck.Slot, keys.TokenType(tokenFor(hdr, ck.Slot)))
			return false
		}
		if _, err := luks2.ImportToken(dev, ck.Slot, tok, true); err != nil {
			problem(ck.Slot, k.Kind(), "store token: %v", err)
			return false
		}
	} else {
		e.dropOwnedToken(volID, dev, ck.Slot, problem)
	}
	if replace {
		// one step: after a crash the slot holds the old or the new key
		if err := luks2.ReplaceKeyslot(dev, vk, enr.Passphrase, ck.Slot, kdf); err != nil {
			problem(ck.Slot, k.Kind(), "replace keyslot: %v", err)
			return false
		}
	} else if _, err := luks2.AddKeyslot(dev, vk, enr.Passphrase, ck.Slot, kdf); err != nil {
		problem(ck.Slot, k.Kind(), "add keyslot: %v", err)
		return false
	}
	e.log().Info("enrolled key", "volume", volID, "slot", ck.Slot, "kind", k.Kind(), "replaced", replace)
	return true
}

// dropOwnedToken removes a Talos/cryptinit token stored with id == slot.
func (e *Engine) dropOwnedToken(volID string, dev luks2.Device, slot int, problem func(int, string, string, ...any)) {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		problem(slot, "token", "read header: %v", err)
		return
	}
	if !slices.Contains(ownedTokens, keys.TokenType(tokenFor(hdr, slot))) {
		return
	}
	if err := luks2.RemoveToken(dev, slot); err != nil {
		problem(slot, "token", "remove stale token: %v", err)
	}
}

// markRecovery makes sure a configured recovery key's slot carries the
// recovery mark, so that it survives being taken out of the config.
func (e *Engine) markRecovery(volID string, dev luks2.Device, hdr *luks2.Header, ck config.Key, problem func(int, string, string, ...any)) {
	cur := tokenFor(hdr, ck.Slot)
	switch {
	case !ck.Recovery || keys.IsRecovery(cur):
		return
	case ForeignToken(hdr, ck.Slot) != "":
		return // another tool enrolled the slot: sync keeps it, marked or not
	case isForeign(keys.TokenType(cur)):
		// the token id our mark would take holds another tool's token for
		// another slot: never overwrite it; say so, as the slot stays unmarked
		problem(ck.Slot, ck.Kind(), "cannot mark as recovery key: token id %d holds a %s token of another tool; keep the key in the config", ck.Slot, keys.TokenType(cur))
		return
	}
	tok, err := keys.RecoveryToken(cur)
	if err == nil {
		_, err = luks2.ImportToken(dev, ck.Slot, tok, true)
	}
	if err != nil {
		problem(ck.Slot, ck.Kind(), "mark as recovery key: %v", err)
	}
}

// failedBeforeOpener reports whether a configured key tried before the one
// that opened failed in a way sync acts on: then sync runs in full. A
// foreign slot's failure is not one (sync keeps those slots).
func failedBeforeOpener(opened *Result, hdr *luks2.Header) bool {
	for _, a := range opened.Attempts {
		if a.Slot != opened.Slot && ForeignToken(hdr, a.Slot) == "" && (errors.Is(a.Err, keys.ErrWrongKey) || errors.Is(a.Err, keys.ErrNoToken) ||
			errors.Is(a.Err, keys.ErrBadToken) || errors.Is(a.Err, ErrSlotEmpty) ||
			errors.Is(a.Err, keys.ErrSealedStateChanged)) {
			return true
		}
	}
	return false
}

// syncUnauthenticated is Sync for a config that is not authenticated: it
// writes nothing. It lists, from the header alone (no key fetched, no KDF
// run), the changes a full sync would make: configured slots that are
// empty, recovery marks missing, slots the config does not name (but not
// those another tool's token lists: a full sync keeps them). Whether a
// configured slot's key still opens it is not checked. The fingerprint is
// neither checked nor stored.
func (e *Engine) syncUnauthenticated(vol *config.Volume, dev luks2.Device, ks []config.Key, opened *Result, rep *SyncReport) {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: read header: %w", vol.ID, err))
		return
	}
	configured := map[int]bool{}
	for _, ck := range ks {
		configured[ck.Slot] = true
		_, present := hdr.Keyslots[ck.Slot]
		switch {
		case !present && ck.Slot != opened.Slot:
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("add slot %d (%s)", ck.Slot, ck.Kind()))
		case ck.Recovery && !keys.IsRecovery(tokenFor(hdr, ck.Slot)) && ForeignToken(hdr, ck.Slot) == "":
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("mark slot %d (%s) as recovery key", ck.Slot, ck.Kind()))
		}
	}
	for s := 0; s < luks2.MaxKeyslots; s++ {
		if _, ok := hdr.Keyslots[s]; ok && !configured[s] && s != opened.Slot && !keys.IsRecovery(tokenFor(hdr, s)) && ForeignToken(hdr, s) == "" {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("remove slot %d", s))
		}
	}
	if len(rep.Skipped) == 0 {
		e.log().Info("key slots not synced", "volume", vol.ID, "why", vol.Trust.Why())
		return
	}
	err = fmt.Errorf("sync %s: %w: %s", vol.ID, ErrNotAuthenticated, vol.Trust.Why())
	rep.Problems = append(rep.Problems, err)
	e.log().Info("key slots not synced", "volume", vol.ID, "err", err) // the report carries it
}
