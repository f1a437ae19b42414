package unlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// pcrTPM is a fake TPM that binds what it seals to the PCR 7 value of the
// moment (kept in the first byte of Private) and fails the way tpm.Sealer
// does when PCR 7 changed, PCR 15 was latched or no PCR 11 signature matches.
type pcrTPM struct {
	pcr7    byte
	latched bool // PCR 15 extended this boot
	noSig   bool // no signature for the current PCR 11
}

func (f *pcrTPM) Seal(_ context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error) {
	return &tpm.Sealed{Private: append([]byte{f.pcr7}, secret...), Public: []byte{1}, PCRs: slices.Clone(pcrs),
		PubKeyPCRs: []int{11}, Alg: "sha256", EncryptionVersion: "1"}, nil
}

func (f *pcrTPM) Unseal(_ context.Context, s *tpm.Sealed) ([]byte, error) {
	switch {
	case f.noSig:
		return nil, fmt.Errorf("unseal: policy for PCRs [11]: %w", tpm.ErrNoSignature)
	case slices.Contains(s.PCRs, tpm.LatchPCR) && f.latched:
		// tpm.Sealer names the changed PCRs when the token kept its values
		return nil, fmt.Errorf("unseal: %w", &tpm.PCRChangedError{Changed: []int{tpm.LatchPCR}})
	case slices.Contains(s.PCRs, tpm.SecureBootPCR) && s.Private[0] != f.pcr7:
		return nil, fmt.Errorf("unseal: %w", &tpm.PCRChangedError{Changed: []int{tpm.SecureBootPCR}})
	}
	return bytes.Clone(s.Private[1:]), nil
}

type secureBootState struct {
	on  bool
	err error
}

func (s secureBootState) SecureBootEnabled(context.Context) (bool, error) { return s.on, s.err }

// TestReenrollAfterPCR7Change boots a volume with a tpm key in slot 0 and a
// static fallback in slot 1, changes the TPM's state, boots again (the
// fallback opens) and checks whether sync re-sealed the tpm slot.
func TestReenrollAfterPCR7Change(t *testing.T) {
	on := secureBootState{on: true}
	tests := []struct {
		name       string
		tpmKey     string
		secureBoot keys.SecureBoot // at the second boot
		change     func(*pcrTPM)
		reenroll   bool
		problem    string // with !reenroll: in the one sync problem
	}{
		{"PCR 7 changed, opted in, Secure Boot on", "{reenrollOnPCRChange: true}", on,
			func(f *pcrTPM) { f.pcr7++ }, true, ""},
		{"explicit PCR 7", "{options: {pcrs: [7]}, reenrollOnPCRChange: true}", on,
			func(f *pcrTPM) { f.pcr7++ }, true, ""},
		{"not opted in", "{}", on,
			func(f *pcrTPM) { f.pcr7++ }, false, "set tpm.reenrollOnPCRChange"},
		{"Secure Boot off", "{reenrollOnPCRChange: true}", secureBootState{},
			func(f *pcrTPM) { f.pcr7++ }, false, "Secure Boot is off"},
		{"Secure Boot state unreadable", "{reenrollOnPCRChange: true}", secureBootState{err: errors.New("no efivarfs")},
			func(f *pcrTPM) { f.pcr7++ }, false, "no efivarfs"},
		{"Secure Boot state unknown", "{reenrollOnPCRChange: true}", nil,
			func(f *pcrTPM) { f.pcr7++ }, false, "Secure Boot state unknown"},
		{"PCR 15 latched", "{options: {pcrs: [7, 15]}, reenrollOnPCRChange: true}", on,
			func(f *pcrTPM) { f.latched = true }, false, "cannot check the key"},
		{"PCR 7 changed, PCR 15 also bound and unchanged", "{options: {pcrs: [7, 15]}, reenrollOnPCRChange: true}", on,
			func(f *pcrTPM) { f.pcr7++ }, true, ""},
		{"no PCR 11 signature", "{reenrollOnPCRChange: true}", on,
			func(f *pcrTPM) { f.noSig = true }, false, "cannot check the key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := image(t, imageSize)
			y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
				"    - {slot: 0, tpm: " + tt.tpmKey + "}\n" +
				"    - {slot: 1, static: {passphrase: fallback}}\n" + smallKDF
			vol := volume(t, y, "EPHEMERAL")
			chip := &pcrTPM{pcr7: 1}
			e := &Engine{Env: keys.Env{TPM: chip, SecureBoot: on}}
			r, err := e.Unlock(ctx, vol, dev, imageSize)
			if err != nil || !r.Formatted || r.Slot != 0 || len(r.Sync.Problems) > 0 {
				t.Fatalf("format: %v %+v", err, r)
			}
			r.Zero()
			salt := slotSalt(t, dev, 0)

			tt.change(chip)
			e.Env.SecureBoot = tt.secureBoot
			r, err = e.Unlock(ctx, vol, dev, imageSize)
			if err != nil {
				t.Fatal(err)
			}
			r.Zero()
			if r.Slot != 1 || r.Sync == nil {
				t.Fatalf("second boot opened with slot %d, sync %v", r.Slot, r.Sync)
			}
			if !tt.reenroll {
				if r.Sync.Changed() || len(r.Sync.Problems) != 1 ||
					!strings.Contains(r.Sync.Problems[0].Error(), "slot 0 (tpm)") ||
					!strings.Contains(r.Sync.Problems[0].Error(), tt.problem) {
					t.Fatalf("sync: %v (want one problem on slot 0 with %q)", r.Sync, tt.problem)
				}
				if !bytes.Equal(slotSalt(t, dev, 0), salt) {
					t.Fatal("slot 0 was rewritten")
				}
				return
			}
			if !slices.Equal(r.Sync.Replaced, []int{0}) || len(r.Sync.Problems) > 0 ||
				!strings.Contains(r.Sync.Reasons[0], "PCR 7 changed") ||
				!strings.Contains(r.Sync.String(), "slot 0: tpm re-enrolled: PCR 7 changed") {
				t.Fatalf("sync: %v", r.Sync)
			}
			if bytes.Equal(slotSalt(t, dev, 0), salt) {
				t.Fatal("slot 0 was not rewritten")
			}
			if !opens(t, dev, "fallback", 1) {
				t.Fatal("the fallback slot that opened the volume no longer opens")
			}
			// the next boot opens with the re-sealed tpm key
			r, err = e.Unlock(ctx, vol, dev, imageSize)
			if err != nil {
				t.Fatal(err)
			}
			r.Zero()
			if r.Slot != 0 || r.Kind != "tpm" || r.Sync.Changed() || len(r.Sync.Problems) > 0 {
				t.Fatalf("third boot: slot %d (%s), sync %v", r.Slot, r.Kind, r.Sync)
			}
		})
	}
}

// TestReenrollNeedsAnotherKey checks that a tpm slot whose PCR 7 changed
// is not rewritten when it is the only key (nothing else opened the volume).
func TestReenrollNeedsAnotherKey(t *testing.T) {
	dev := image(t, imageSize)
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - {slot: 0, tpm: {reenrollOnPCRChange: true}}\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	chip := &pcrTPM{pcr7: 1}
	e := &Engine{Env: keys.Env{TPM: chip, SecureBoot: secureBootState{on: true}}}
	r, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	before := digest(t, dev)
	chip.pcr7++
	r, err = e.Unlock(ctx, vol, dev, imageSize)
	if err == nil {
		r.Zero()
		t.Fatalf("opened with slot %d although PCR 7 changed", r.Slot)
	}
	if !strings.Contains(err.Error(), "PCR 7") {
		t.Errorf("error does not say PCR 7 changed: %v", err)
	}
	if digest(t, dev) != before {
		t.Fatal("the volume was written although no key opened it")
	}
}

func slotSalt(t *testing.T, dev luks2.Device, slot int) []byte {
	t.Helper()
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	ks, ok := hdr.Keyslots[slot]
	if !ok {
		t.Fatalf("slot %d is empty", slot)
	}
	return bytes.Clone(ks.KDF.Salt)
}
