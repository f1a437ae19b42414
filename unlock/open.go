package unlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// tokenFor returns the raw token stored with id == slot (Talos's rule);
// the engine's own fingerprint token belongs to no slot.
func tokenFor(hdr *luks2.Header, slot int) []byte {
	if t, ok := hdr.Tokens[slot]; ok && t.Type != TokenSyncState {
		return t.Raw
	}
	return nil
}

// assignedTokens returns the raw tokens whose keyslots list slot, in id order.
func assignedTokens(hdr *luks2.Header, slot int) [][]byte {
	var out [][]byte
	for id := 0; id < luks2.MaxTokens; id++ {
		if t, ok := hdr.Tokens[id]; ok && slices.Contains(t.Keyslots, slot) {
			out = append(out, t.Raw)
		}
	}
	return out
}

// tryKey asks key for slot's passphrase and tries it on that slot. It
// returns the volume key, or an error wrapping keys.ErrWrongKey,
// ErrSlotEmpty or the key's own error.
func (e *Engine) tryKey(ctx context.Context, volID string, k keys.Key, slot int, hdr *luks2.Header, dev io.ReaderAt) ([]byte, error) {
	return e.tryKeyTimed(ctx, volID, k, slot, hdr, dev, &Attempt{})
}

// tryKeyTimed is tryKey that also fills a's KeyDuration and KDFDuration.
func (e *Engine) tryKeyTimed(ctx context.Context, volID string, k keys.Key, slot int, hdr *luks2.Header, dev io.ReaderAt, a *Attempt) ([]byte, error) {
	if _, ok := hdr.Keyslots[slot]; !ok {
		return nil, ErrSlotEmpty
	}
	if err := hdr.CheckKDF(slot, e.KDFLimits); err != nil {
		// never derive what would exhaust the machine; the key is not
		// wrong, only unavailable here (no decision may count it as wrong)
		return nil, fmt.Errorf("%w (%w)", err, keys.ErrKeyUnavailable)
	}
	start := e.now()
	kctx, cancel := e.keyContext(ctx)
	pass, err := k.Passphrase(kctx, keys.Slot{VolumeID: volID, Slot: slot, Token: tokenFor(hdr, slot), Assigned: assignedTokens(hdr, slot)})
	cancel()
	fetched := e.now()
	a.KeyDuration = fetched.Sub(start)
	if err != nil {
		return nil, err
	}
	defer keys.Zero(pass)
	unlockSlot := e.unlockSlot
	if unlockSlot == nil {
		unlockSlot = (*luks2.Header).Unlock
	}
	vk, _, err := unlockSlot(hdr, dev, pass, slot)
	a.KDFDuration = e.now().Sub(fetched)
	if errors.Is(err, luks2.ErrNoKeyslotOpens) {
		return nil, keys.ErrWrongKey
	}
	return vk, err
}

// open tries every configured key in slot order until one opens.
func (e *Engine) open(ctx context.Context, vol *config.Volume, dev io.ReaderAt, hdr *luks2.Header) (*Result, error) {
	ks, err := configuredKeys(vol)
	if err != nil {
		return nil, err
	}
	for _, w := range hdr.Warnings {
		e.log().Warn("LUKS2 header", "volume", vol.ID, "warning", w)
	}
	res := &Result{VolumeID: vol.ID, UUID: hdr.UUID, Slot: -1}
	for _, ck := range ks {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("open %s: %w", vol.ID, err)
		}
		k, err := keys.FromConfig(ck, e.env())
		kind := ck.Kind()
		if k != nil {
			kind = k.Kind()
		}
		start := e.now()
		a := Attempt{Slot: ck.Slot, Kind: kind}
		var vk []byte
		if err == nil {
			vk, err = e.tryKeyTimed(ctx, vol.ID, k, ck.Slot, hdr, dev, &a)
		}
		if ck.LockToSTATE && errors.Is(err, keys.ErrWrongKey) {
			err = fmt.Errorf("%w (the key is locked to STATE: was STATE wiped or replaced since this volume was made?)", err)
		}
		a.Err, a.Duration = err, e.now().Sub(start)
		res.Attempts = append(res.Attempts, a)
		if err != nil {
			e.log().Info("key did not open", "volume", vol.ID, "slot", ck.Slot, "kind", kind, "err", err)
			continue
		}
		res.VolumeKey, res.Slot, res.Kind = vk, ck.Slot, kind
		e.log().Info("opened", "volume", vol.ID, "slot", ck.Slot, "kind", kind)
		break
	}
	if res.Slot < 0 {
		return nil, &OpenError{Volume: vol.ID, Op: "open", Attempts: res.Attempts, Err: ErrNoKeyOpens}
	}
	if err := e.fillMapping(res, vol, hdr); err != nil {
		res.Zero()
		return nil, err
	}
	return res, nil
}

func (e *Engine) fillMapping(res *Result, vol *config.Volume, hdr *luks2.Header) error {
	m, err := hdr.Mapping()
	if err != nil {
		return fmt.Errorf("open %s: %w", vol.ID, err)
	}
	m.AllowDiscards = m.AllowDiscards || vol.Encryption.AllowDiscards
	res.Mapping = m
	res.Options = vol.Encryption.Options
	return nil
}
