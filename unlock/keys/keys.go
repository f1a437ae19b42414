// Package keys turns the key kinds of a volume config (static, nodeID, kms,
// tpm, each optionally lockToSTATE) into LUKS2 passphrases, one kind per file
// behind one small interface. Hardware and network (SMBIOS UUID, KMS, TPM,
// the STATE salt) sit behind interfaces so that every kind runs in unit tests.
package keys

import (
	"context"
	"errors"
)

// Key is one configured key of a volume.
type Key interface {
	// Kind names the kind for messages, e.g. "nodeID" or "kms+lockToSTATE".
	Kind() string
	// Passphrase returns the passphrase for an existing keyslot, using the
	// slot's token when the kind keeps one there. The caller zeroes it.
	Passphrase(ctx context.Context, s Slot) ([]byte, error)
	// Enroll makes a new key for slot s.Slot: its passphrase and the LUKS2
	// token (JSON, stored with token id == keyslot) or nil when the kind has
	// none. The caller zeroes the passphrase.
	Enroll(ctx context.Context, s Slot) (*Enrollment, error)
}

// Slot identifies the keyslot a key is asked about.
type Slot struct {
	VolumeID string // STATE, EPHEMERAL, u-<name>: part of the nodeID passphrase
	Slot     int    // keyslot, also the token id
	Token    []byte // raw JSON of token id == Slot on the volume, nil if none
	// Assigned are the raw tokens (any id) whose keyslots list Slot, e.g.
	// systemd-cryptenroll's systemd-tpm2 tokens.
	Assigned [][]byte
}

// Enrollment is a newly created key.
type Enrollment struct {
	Passphrase []byte
	Token      []byte // nil: no token
}

// Zero wipes the passphrase.
func (e *Enrollment) Zero() {
	if e != nil {
		Zero(e.Passphrase)
	}
}

// Errors that drive the engine's and sync's decisions.
var (
	// ErrKeyUnavailable: the key's source cannot give it now (no TPM, KMS
	// unreachable or refusing, no node UUID, STATE salt missing). The slot
	// may still be good: sync never replaces or removes it for this.
	ErrKeyUnavailable = errors.New("key unavailable")
	// ErrSealedStateChanged: a tpm key no longer unseals because PCR 7,
	// and no other bound PCR, changed since sealing (Secure Boot turned off,
	// or its keys/dbx updated): the key is bound to PCR 7 alone, or the TPM
	// named PCR 7 as the only one changed (tpm.PCRChangedError). It is always returned together with
	// ErrKeyUnavailable, so callers that only know that one leave the slot
	// alone; sync re-seals the slot when the key opts in
	// (reenrollOnPCRChange) and Secure Boot is on.
	ErrSealedStateChanged = errors.New("sealed key's PCR 7 (Secure Boot state) changed since enrollment")
	// ErrWrongKey: the key was obtained but does not open its slot. Sync
	// replaces such a slot (never the one that opened the volume).
	ErrWrongKey = errors.New("key does not open its slot")
	// ErrNoToken: the slot lacks the token this kind needs (kms, tpm), so
	// the key cannot be derived from it; sync re-enrolls the slot.
	ErrNoToken = errors.New("slot has no token for this key kind")
	// ErrBadToken: the slot's token is of another type or malformed; sync
	// re-enrolls the slot.
	ErrBadToken = errors.New("slot token does not belong to this key kind")
	// ErrLowEntropy: the node UUID is missing or not random enough for a
	// nodeID key (a permanent property of the machine).
	ErrLowEntropy = errors.New("node UUID fails the entropy check")
	// ErrSecureBootOff: a tpm key with checkSecurebootStatusOnEnroll was to
	// be enrolled while Secure Boot is not enabled.
	ErrSecureBootOff = errors.New("secure boot is not enabled")
)

// Zero overwrites b with zeros.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
