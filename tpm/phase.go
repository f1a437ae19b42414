package tpm

import (
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"
)

// Phase is a boot phase word extended into PCR 11, as systemd-pcrphase does.
type Phase string

// The phases the initrd measures.
const (
	PhaseEnterInitrd Phase = "enter-initrd" // at initramfs start
	PhaseLeaveInitrd Phase = "leave-initrd" // just before switch_root
	// PhaseDebugShell is extended before a debug shell after a failed boot:
	// no signed PCR 11 policy names it, so nothing sealed to the initrd's
	// phases unseals from the shell.
	PhaseDebugShell Phase = "debug-shell"
)

// Logger receives one line per measurement; *log.Logger satisfies it.
type Logger interface {
	Printf(format string, args ...any)
}

// PhaseDigest is what a phase extends PCR 11 with: SHA-256 of the word
// (no NUL), as systemd-pcrphase and systemd-measure compute it.
func PhaseDigest(p Phase) []byte {
	d := sha256.Sum256([]byte(p))
	return d[:]
}

// MeasurePhase extends PCR 11 with PhaseDigest(p) and logs it. After
// leave-initrd, secrets sealed to the enter-initrd signature cannot be unsealed.
func MeasurePhase(t transport.TPM, p Phase, log Logger) error {
	d := PhaseDigest(p)
	if err := ExtendPCR(t, UKIPCR, d); err != nil {
		return fmt.Errorf("measure phase %q: %w", p, err)
	}
	if log != nil {
		log.Printf("tpm: extended PCR %d with phase %q (sha256 %x)", UKIPCR, p, d)
	}
	return nil
}

// latchDomain separates the latch digest from any other use of the volume key.
const latchDomain = "cryptinit/pcr15-latch/v1\x00"

// LatchDigest is what LatchVolumeKey extends PCR 15 with:
//
//	SHA-256("cryptinit/pcr15-latch/v1\x00" || volumeID || "\x00" || SHA-256(volumeKey))
//
// The volume key enters only through its hash, domain-separated, so the PCR
// value (readable by anyone) reveals nothing usable about the key, yet differs
// per volume and per key.
func LatchDigest(volumeID string, volumeKey []byte) []byte {
	kh := sha256.Sum256(volumeKey)
	h := sha256.New()
	h.Write([]byte(latchDomain))
	h.Write([]byte(volumeID))
	h.Write([]byte{0})
	h.Write(kh[:])
	clear(kh[:])
	return h.Sum(nil)
}

// LatchVolumeKey extends PCR 15 with LatchDigest(volumeID, volumeKey), like
// systemd-cryptsetup's tpm2-measure-pcr=yes. A secret bound to PCR 15 at an
// earlier value then fails to unseal for the rest of the boot, so a planted
// volume cannot obtain a second unseal, and a secret sealed after a given
// sequence of latches (EPHEMERAL's, after STATE's) unseals only after that
// same sequence. The boot latches each volume as it opens (boot/latch.go).
// The key is never logged.
func LatchVolumeKey(t transport.TPM, volumeID string, volumeKey []byte, log Logger) error {
	d := LatchDigest(volumeID, volumeKey)
	if err := ExtendPCR(t, LatchPCR, d); err != nil {
		return fmt.Errorf("latch volume %s into PCR %d: %w", volumeID, LatchPCR, err)
	}
	if log != nil {
		log.Printf("tpm: extended PCR %d with the latch of volume %s", LatchPCR, volumeID)
	}
	return nil
}

// Measurer extends the boot measurements into one TPM and logs each: the
// object boot/ holds behind its own small interface.
type Measurer struct {
	TPM transport.TPM
	Log Logger // may be nil
}

// MeasurePhase extends PCR 11 with phase p.
func (m *Measurer) MeasurePhase(p Phase) error { return MeasurePhase(m.TPM, p, m.Log) }

// LatchVolumeKey extends PCR 15 with the latch of a volume's key.
func (m *Measurer) LatchVolumeKey(volumeID string, volumeKey []byte) error {
	return LatchVolumeKey(m.TPM, volumeID, volumeKey, m.Log)
}
