package unlock

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// A full sync checks every configured key on its slot, one KDF run each,
// at every boot. To keep boots at one KDF per volume, a finished sync
// stores a fingerprint of what it checked in a "cryptinit-sync" token:
// HMAC-SHA256 keyed with the volume key over every configured key's slot,
// kind and current passphrase (derived again at each boot: no KDF, but a
// KMS round trip for kms keys, so a key that became unavailable still
// forces the full check and its report; the key that opened the volume
// counts as "opened" instead, and a tpm key that did not is never
// unsealed: its token stands for it), every keyslot
// (id and KDF salt, which changes whenever a slot is rewritten) and every
// other token. When the next boot computes the same fingerprint, nothing
// sync would act on has changed, so it skips the KDF checks. The HMAC key
// is the volume key: the token tells nothing to whoever lacks it.

// TokenSyncState is the type of the fingerprint token.
const TokenSyncState = "cryptinit-sync"

type syncToken struct {
	Type     string   `json:"type"`
	Keyslots []string `json:"keyslots"`
	Digest   []byte   `json:"cryptinit-digest"`
}

// syncFingerprint computes the fingerprint, or nil when a key cannot be
// derived now (then sync runs in full).
func (e *Engine) syncFingerprint(ctx context.Context, vol *config.Volume, hdr *luks2.Header, ks []config.Key, vk []byte, opener int) []byte {
	mac := hmac.New(sha256.New, vk)
	mac.Write([]byte("cryptinit sync v1\x00" + vol.ID + "\x00"))
	for _, ck := range ks {
		k, err := keys.FromConfig(ck, e.env())
		if err != nil {
			return nil
		}
		writeInt(mac, ck.Slot)
		writeBytes(mac, []byte(k.Kind()))
		writeBool(mac, ck.Recovery)
		if ck.Slot == opener {
			// it opened the volume this boot: proven, and asking a TPM or
			// KMS for it twice would cost a round trip (or hit the PCR 15
			// latch)
			writeBytes(mac, []byte("opened"))
			continue
		}
		if ck.TPM != nil {
			// never unseal a tpm key that did not open the volume: its
			// token (hashed below) stands for it
			writeBytes(mac, []byte("tpm, not unsealed"))
			continue
		}
		kctx, cancel := e.keyContext(ctx)
		pass, err := k.Passphrase(kctx, keys.Slot{VolumeID: vol.ID, Slot: ck.Slot, Token: tokenFor(hdr, ck.Slot), Assigned: assignedTokens(hdr, ck.Slot)})
		cancel()
		if err != nil {
			return nil
		}
		writeBytes(mac, pass)
		keys.Zero(pass)
	}
	for id := 0; id < luks2.MaxKeyslots; id++ {
		if ks, ok := hdr.Keyslots[id]; ok {
			writeInt(mac, id)
			writeBytes(mac, ks.KDF.Salt)
		}
	}
	writeInt(mac, -1)
	for id := 0; id < luks2.MaxTokens; id++ {
		if t, ok := hdr.Tokens[id]; ok && t.Type != TokenSyncState {
			writeInt(mac, id)
			writeBytes(mac, t.Raw)
		}
	}
	return mac.Sum(nil)
}

func writeInt(h hash.Hash, v int) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(int64(v)))
	h.Write(b[:])
}

func writeBytes(h hash.Hash, b []byte) {
	writeInt(h, len(b))
	h.Write(b)
}

func writeBool(h hash.Hash, v bool) {
	if v {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
}

// storedFingerprint returns the fingerprint token's id and digest (-1, nil
// when there is none).
func storedFingerprint(hdr *luks2.Header) (int, []byte) {
	for id := luks2.MaxTokens - 1; id >= 0; id-- {
		t, ok := hdr.Tokens[id]
		if !ok || t.Type != TokenSyncState {
			continue
		}
		var st syncToken
		if json.Unmarshal(t.Raw, &st) == nil {
			return id, st.Digest
		}
		return id, nil
	}
	return -1, nil
}

// storeFingerprint writes the fingerprint token at the highest token id
// that no keyslot or configured key uses (ids equal to keyslots belong to
// those slots' Talos tokens), moving it there if it sat elsewhere.
func storeFingerprint(dev luks2.Device, hdr *luks2.Header, digest []byte, configured map[int]bool) error {
	old, _ := storedFingerprint(hdr)
	id := -1
	for cand := luks2.MaxTokens - 1; cand >= 0 && id < 0; cand-- {
		_, slotUsed := hdr.Keyslots[cand]
		t, tokenUsed := hdr.Tokens[cand]
		if !slotUsed && !configured[cand] && (!tokenUsed || t.Type == TokenSyncState && cand == old) {
			id = cand
		}
	}
	if id < 0 {
		return errors.New("no free token id for the sync fingerprint")
	}
	raw, err := json.Marshal(syncToken{Type: TokenSyncState, Keyslots: []string{}, Digest: digest})
	if err != nil {
		return err
	}
	if _, err := luks2.ImportToken(dev, id, raw, true); err != nil {
		return err
	}
	if old >= 0 && old != id {
		return luks2.RemoveToken(dev, old)
	}
	return nil
}
