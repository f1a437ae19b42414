package console

import (
	"fmt"
	"strings"
)

// SlotReport says what happened when one key slot was tried.
type SlotReport struct {
	Slot int    // -1: any slot (a typed passphrase)
	Kind string // static, nodeID, kms, tpm, console passphrase...
	Err  error  // nil if it opened the volume
}

// Failure is everything the banner says about a boot that cannot go on.
type Failure struct {
	Volume string       // volume ID, e.g. STATE; empty when not about one volume
	Device string       // its partition, when known
	Reason error        // why the boot stops
	Slots  []SlotReport // slots tried, in order
	Hint   string       // what the operator can do
}

const rule = "================================================================"

// Banner renders the failure as lines for Logger.Raw; the first is the stable
// "cryptinit: FAIL " line.
func (f Failure) Banner(rebootIn string, debugShell bool) []string {
	what := f.Volume
	if what == "" {
		what = "boot"
	}
	reason := "unknown error"
	if f.Reason != nil {
		reason = f.Reason.Error()
	}
	// The first line stands alone in logs: it names the slots tried.
	first := fmt.Sprintf("FAIL %s: %s", what, strings.SplitN(reason, "\n", 2)[0])
	if len(f.Slots) > 0 {
		var tried []string
		for _, s := range f.Slots {
			if s.Slot < 0 {
				tried = append(tried, s.Kind)
			} else {
				tried = append(tried, fmt.Sprintf("%d %s", s.Slot, s.Kind))
			}
		}
		first += " (tried: " + strings.Join(tried, ", ") + ")"
	}
	lines := []string{first, rule}
	if f.Volume != "" {
		dev := f.Device
		if dev == "" {
			dev = "partition not found"
		}
		lines = append(lines, fmt.Sprintf("  volume %s (%s) could not be opened", f.Volume, dev))
	}
	if len(f.Slots) > 0 {
		lines = append(lines, "  key slots tried:")
		for _, s := range f.Slots {
			res := "opened"
			if s.Err != nil {
				res = "failed: " + s.Err.Error()
			}
			slot := fmt.Sprintf("slot %d", s.Slot)
			if s.Slot < 0 {
				slot = "any slot"
			}
			lines = append(lines, fmt.Sprintf("    %s (%s): %s", slot, s.Kind, res))
		}
	} else if f.Volume != "" {
		lines = append(lines, "  no key slot was tried")
	}
	if f.Hint != "" {
		for i, h := range strings.Split(f.Hint, "\n") {
			if i == 0 {
				lines = append(lines, "  what to do: "+h)
			} else {
				lines = append(lines, "              "+h)
			}
		}
	}
	if debugShell {
		lines = append(lines, "  cryptinit.debug=shell is set: starting a shell instead of rebooting")
	} else {
		lines = append(lines, fmt.Sprintf("  rebooting in %s (boot with cryptinit.debug=shell for a shell instead)", rebootIn))
	}
	return append(lines, rule)
}
