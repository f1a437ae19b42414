package unlock

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"strings"

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
	// Reasons says why a slot was written when it is not the usual stale
	// key, e.g. "tpm re-enrolled: PCR 7 changed".
	Reasons  map[int]string
	Problems []error // each names the slot; never fatal
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
	for _, p := range r.Problems {
		parts = append(parts, "problem: "+p.Error())
	}
	if len(parts) == 0 && r.UpToDate {
		return "in sync (unchanged since the last check)"
	}
	if len(parts) == 0 {
		return "in sync"
	}
	return strings.Join(parts, "; ")
}

// ownedTokens are the token types that belong to a keyslot by id == slot,
// so they go when their slot goes.
var ownedTokens = []string{keys.TokenKMS, keys.TokenTPM, keys.TokenRecovery}

// Sync brings the volume's keyslots in line with the config, using the
// volume key of opened (from Open or Format). The order keeps the volume
// openable by a configured key after a crash at any write: the slot that
// opened it is never modified; slots are removed only after every add and
// replacement, and a replacement key is created (KMS/TPM sealed) before its
// slot is re-keyed in place.
func (e *Engine) Sync(ctx context.Context, vol config.Volume, dev luks2.Device, opened *Result) *SyncReport {
	rep := &SyncReport{}
	problem := func(slot int, kind string, format string, args ...any) {
		err := fmt.Errorf("sync %s slot %d (%s): %s", vol.ID, slot, kind, fmt.Sprintf(format, args...))
		rep.Problems = append(rep.Problems, err)
		e.log().Warn("sync problem", "volume", vol.ID, "slot", slot, "kind", kind, "err", err)
	}
	ks, err := configuredKeys(&vol)
	if err != nil || opened == nil || len(opened.VolumeKey) == 0 {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: nothing to sync with (%v)", vol.ID, err))
		return rep
	}
	if hdr, err := luks2.ReadHeader(dev); err == nil && hdr.Version != 2 {
		rep.Problems = append(rep.Problems, fmt.Errorf("sync %s: LUKS%d volume: keyslots left as they are (cryptinit writes LUKS2 only; convert with cryptsetup convert --type luks2)", vol.ID, hdr.Version))
		return rep
	}
	vk := opened.VolumeKey
	kdf := kdfFor(vol.Encryption)
	configured := map[int]bool{}
	for _, ck := range ks {
		configured[ck.Slot] = true
	}
	if hdr, err := luks2.ReadHeader(dev); err == nil && !failedBeforeOpener(opened) {
		if _, stored := storedFingerprint(hdr); stored != nil {
			if fp := e.syncFingerprint(ctx, &vol, hdr, ks, vk, opened.Slot); fp != nil && hmac.Equal(fp, stored) {
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
		if fp := e.syncFingerprint(ctx, &vol, hdr, ks, vk, opened.Slot); fp != nil {
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
		if _, present := hdr.Keyslots[ck.Slot]; !present {
			if e.enroll(ctx, vol.ID, dev, ck, k, vk, kdf, false, problem) {
				rep.Added = append(rep.Added, ck.Slot)
			}
			continue
		}
		checkErr, tried := known[ck.Slot]
		if !tried {
			var other []byte
			other, checkErr = e.tryKey(ctx, vol.ID, k, ck.Slot, hdr, dev)
			keys.Zero(other)
		}
		switch {
		case checkErr == nil:
			e.markRecovery(vol.ID, dev, hdr, ck, problem)
		case errors.Is(checkErr, keys.ErrWrongKey), errors.Is(checkErr, keys.ErrNoToken), errors.Is(checkErr, keys.ErrBadToken):
			if e.enroll(ctx, vol.ID, dev, ck, k, vk, kdf, true, problem) {
				rep.Replaced = append(rep.Replaced, ck.Slot)
			}
		case errors.Is(checkErr, keys.ErrSealedStateChanged):
			if why := e.reenrollRefusal(ctx, ck); why != "" {
				problem(ck.Slot, k.Kind(), "the TPM no longer unseals the key because PCR 7 changed; slot left as it is (%s): %v", why, checkErr)
			} else if e.enroll(ctx, vol.ID, dev, ck, k, vk, kdf, true, problem) {
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
		problem(ck.Slot, k.Kind(), "cannot create the key, slot left as it is: %v", err)
		return false
	}
	defer enr.Zero()
	tok, err := slotToken(ck, enr.Token)
	if err != nil {
		problem(ck.Slot, k.Kind(), "token: %v", err)
		return false
	}
	if tok != nil {
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
	if !ck.Recovery || keys.IsRecovery(cur) {
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
// that opened failed in a way sync acts on: then sync runs in full.
func failedBeforeOpener(opened *Result) bool {
	for _, a := range opened.Attempts {
		if a.Slot != opened.Slot && (errors.Is(a.Err, keys.ErrWrongKey) || errors.Is(a.Err, keys.ErrNoToken) ||
			errors.Is(a.Err, keys.ErrBadToken) || errors.Is(a.Err, ErrSlotEmpty)) {
			return true
		}
	}
	return false
}
