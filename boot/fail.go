package boot

import (
	"errors"
	"strings"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// Fatal stops the boot: one banner per failure.
type Fatal struct {
	Failure console.Failure
	More    []console.Failure // other volumes that failed at the same time
}

func (f *Fatal) Error() string {
	s := f.Failure.Volume
	if s != "" {
		s += ": "
	}
	if f.Failure.Reason != nil {
		s += f.Failure.Reason.Error()
	}
	return s
}

// Failures lists every failure, the first one first.
func (f *Fatal) Failures() []console.Failure {
	return append([]console.Failure{f.Failure}, f.More...)
}

// volumeFatal explains why a volume could not be opened and what to do.
func volumeFatal(v *volume, err error, extra []console.SlotReport) *Fatal {
	f := console.Failure{Volume: v.ID, Device: v.part.Path, Reason: err}
	var oe *unlock.OpenError
	if errors.As(err, &oe) {
		f.Reason = oe.Err
		for _, a := range oe.Attempts {
			f.Slots = append(f.Slots, console.SlotReport{Slot: a.Slot, Kind: a.Kind, Err: a.Err})
		}
	}
	f.Slots = append(f.Slots, extra...)
	f.Hint = hintFor(err)
	return &Fatal{Failure: f}
}

func hintFor(err error) string {
	var hints []string
	switch {
	case errors.Is(err, probe.ErrNotEmpty):
		hints = append(hints, "cryptinit never formats a partition that holds data. If its data may go,",
			"stage a wipe (cryptctl meta request-wipe --volume ID META-DEVICE) and reboot;",
			"otherwise remove the encryption section of this volume from the config")
	case errors.Is(err, unlock.ErrNoKeyEnrolls):
		hints = append(hints, "no configured key could be created for the new volume: check the key sources",
			"(KMS reachable, TPM present, node UUID with enough entropy, Secure Boot when required)")
	case errors.Is(err, unlock.ErrNoKeyOpens):
		hints = append(hints, "make one configured key work again: the node UUID (nodeID), the KMS (kms),",
			"the TPM and the signed UKI (tpm), STATE not wiped or replaced (lockToSTATE),",
			"or type a recovery passphrase at the console prompt (cryptinit.prompt-timeout=)")
	}
	if errors.Is(err, keys.ErrKeyUnavailable) && !errors.Is(err, unlock.ErrNoKeyOpens) {
		hints = append(hints, "a key source is unavailable (network, TPM or STATE salt)")
	}
	if msg := err.Error(); len(hints) == 0 {
		switch {
		case strings.Contains(msg, "/dev/mapper/control") || strings.Contains(msg, "map luks2-"):
			hints = append(hints, "device-mapper failed: the image must ship dm-mod, dm-crypt and the cipher modules (xts, ecb, aes)")
		case strings.Contains(msg, "mkfs:"):
			hints = append(hints, "the image must ship mkfs.xfs / mkfs.ext4 with their libraries (xfs by default; filesystem: ext4 in the config)")
		case strings.Contains(msg, "module did not load"), strings.Contains(msg, "mount /dev/"):
			hints = append(hints, "the filesystem module (xfs, ext4) must be in the image; check the modules lines above")
		}
	}
	if len(hints) == 0 {
		hints = append(hints, "see the reason above; boot with cryptinit.debug=shell to inspect the machine")
	}
	return strings.Join(hints, "\n")
}
