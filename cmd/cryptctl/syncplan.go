package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// overlay is a copy-on-write view of a device for `volume sync --dry-run`:
// reads see the device with the writes made so far, writes stay in memory.
// The device itself is open read-only and never written.
type overlay struct {
	base  io.ReaderAt
	size  int64
	block map[int64][]byte // written blocks by index
}

const overlayBlock = 4096

func newOverlay(base io.ReaderAt, size int64) *overlay {
	return &overlay{base: base, size: size, block: map[int64][]byte{}}
}

// ReadAt implements io.ReaderAt.
func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	n := len(p)
	if off+int64(n) > o.size {
		n = int(o.size - off)
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		idx, in := pos/overlayBlock, int(pos%overlayBlock)
		chunk := min(overlayBlock-in, n-done)
		if b, ok := o.block[idx]; ok {
			copy(p[done:done+chunk], b[in:])
		} else if _, err := o.base.ReadAt(p[done:done+chunk], pos); err != nil && !errors.Is(err, io.EOF) {
			return done, err
		}
		done += chunk
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt, in memory only.
func (o *overlay) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("dry run: write past the end of the device (%d > %d)", off+int64(len(p)), o.size)
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		idx, in := pos/overlayBlock, int(pos%overlayBlock)
		b, ok := o.block[idx]
		if !ok {
			b = make([]byte, overlayBlock)
			if _, err := o.base.ReadAt(b, idx*overlayBlock); err != nil && !errors.Is(err, io.EOF) {
				return done, err
			}
			o.block[idx] = b
		}
		done += copy(b[in:], p[done:])
	}
	return len(p), nil
}

// Sync implements luks2.Device: nothing reaches the device.
func (o *overlay) Sync() error { return nil }

// dryRunKMS unseals with the real KMS (sync checks keys) but never asks it
// to seal: a dry run enrolls into the overlay a placeholder that no one
// will ever read.
type dryRunKMS struct{ keys.KMS }

// Seal implements keys.KMS without the network.
func (dryRunKMS) Seal(_ context.Context, _, _ string, data []byte) ([]byte, error) {
	return []byte("cryptctl dry run: not sealed"), nil
}

// slotKinds names the configured key kind of each slot.
func slotKinds(vol *config.Volume) map[int]string {
	m := map[int]string{}
	if vol.Encryption != nil {
		for _, k := range vol.Encryption.Keys {
			m[k.Slot] = k.Kind()
		}
	}
	return m
}

// syncPlan prints what a dry-run Sync (on an overlay) did, as the changes a
// real sync would make and why.
func syncPlan(w io.Writer, vol *config.Volume, rep *unlock.SyncReport) {
	kinds := slotKinds(vol)
	fmt.Fprintf(w, "dry run: %s unchanged (nothing was written); a sync would:\n", vol.ID)
	n := 0
	line := func(format string, args ...any) {
		fmt.Fprintf(w, "  "+format+"\n", args...)
		n++
	}
	for _, s := range rep.Added {
		line("add slot %d (%s): configured, and the slot is empty", s, kinds[s])
	}
	for _, s := range rep.Replaced {
		why := "its configured key no longer opens it"
		if r, ok := rep.Reasons[s]; ok {
			why = r
		}
		line("re-key slot %d (%s): %s", s, kinds[s], why)
	}
	for _, s := range rep.Removed {
		line("remove slot %d: the config does not name it, and it neither opened the volume nor is a recovery key", s)
	}
	for _, s := range rep.Kept {
		line("keep slot %d: not in the config, but marked as a recovery key", s)
	}
	for _, s := range rep.Foreign {
		line("keep slot %d as it is: %s", s, rep.Reasons[s])
	}
	for _, s := range rep.Skipped {
		line("skip: %s", s)
	}
	for _, p := range rep.Problems {
		line("problem: %v", p)
	}
	if n == 0 {
		if rep.UpToDate {
			line("nothing: in sync (unchanged since the last check)")
		} else {
			line("nothing: in sync")
		}
	}
}

// syncPreview lists what `volume sync` would change, seen from the header
// and from the keys open tried (no key is asked, no KDF runs): configured
// slots that are empty or whose key did not open them, recovery marks
// missing, slots the config does not name, slots whose key could not be
// checked (KMS down, no salt). Configured slots after the one that opened
// were not tried; sync checks them.
func syncPreview(vol *config.Volume, hdr *luks2.Header, res *unlock.Result) []string {
	var out []string
	tried := map[int]error{}
	for _, a := range res.Attempts {
		tried[a.Slot] = a.Err
	}
	token := func(s int) []byte {
		if t, ok := hdr.Tokens[s]; ok && t.Type != unlock.TokenSyncState {
			return t.Raw
		}
		return nil
	}
	configured := map[int]bool{}
	var unchecked []int
	ks := slices.Clone(vol.Encryption.Keys)
	slices.SortFunc(ks, func(a, b config.Key) int { return a.Slot - b.Slot })
	for _, k := range ks {
		configured[k.Slot] = true
		if t := unlock.ForeignToken(hdr, k.Slot); t != "" {
			out = append(out, foreignKeep(k.Slot, t))
			continue
		}
		_, present := hdr.Keyslots[k.Slot]
		err, wasTried := tried[k.Slot]
		switch {
		case k.Slot == res.Slot:
		case !present:
			out = append(out, fmt.Sprintf("add slot %d (%s): configured, and the slot is empty", k.Slot, k.Kind()))
			continue
		case wasTried && (errors.Is(err, keys.ErrWrongKey) || errors.Is(err, keys.ErrNoToken) || errors.Is(err, keys.ErrBadToken)):
			out = append(out, fmt.Sprintf("re-key slot %d (%s): %v", k.Slot, k.Kind(), err))
			continue
		case wasTried && errors.Is(err, keys.ErrSealedStateChanged):
			out = append(out, fmt.Sprintf("re-enroll slot %d (%s) if tpm.reenrollOnPCRChange and Secure Boot allow it: %v", k.Slot, k.Kind(), err))
			continue
		case !wasTried:
			unchecked = append(unchecked, k.Slot)
		case err != nil:
			out = append(out, fmt.Sprintf("leave slot %d (%s) as it is: its key cannot be checked now (%v)", k.Slot, k.Kind(), err))
		}
		if k.Recovery && !keys.IsRecovery(token(k.Slot)) {
			out = append(out, fmt.Sprintf("mark slot %d (%s) as a recovery key", k.Slot, k.Kind()))
		}
	}
	for _, s := range luksSorted(hdr.Keyslots) {
		switch {
		case configured[s] || s == res.Slot:
		case unlock.ForeignToken(hdr, s) != "":
			out = append(out, foreignKeep(s, unlock.ForeignToken(hdr, s)))
		case keys.IsRecovery(token(s)):
			out = append(out, fmt.Sprintf("keep slot %d: not in the config, but marked as a recovery key", s))
		default:
			out = append(out, fmt.Sprintf("remove slot %d: the config does not name it", s))
		}
	}
	if len(unchecked) > 0 {
		out = append(out, fmt.Sprintf("check slots %v, which open did not try, and re-key those whose key no longer opens them (cryptctl volume sync --dry-run checks them)", unchecked))
	}
	if len(out) > 0 && !vol.Trust.Authenticated {
		out = append(out, fmt.Sprintf("(this config may not change key slots: %s)", vol.Trust.Why()))
	}
	return out
}

// foreignKeep says that sync leaves a slot another tool enrolled alone.
func foreignKeep(slot int, tokenType string) string {
	return fmt.Sprintf("keep slot %d as it is: a %s token (another tool's) names it; sync never re-keys, removes or marks it", slot, tokenType)
}

// printSyncPreview prints syncPreview for an opened volume.
func printSyncPreview(w io.Writer, vol *config.Volume, dev *os.File, res *unlock.Result) {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		fmt.Fprintf(w, "  sync would: (header: %v)\n", err)
		return
	}
	lines := syncPreview(vol, hdr, res)
	if len(lines) == 0 {
		fmt.Fprintln(w, "  sync would change nothing")
		return
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  sync would: %s\n", l)
	}
}
