package luks2

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// A keyslot's KDF can ask for more than the machine has: an argon2 slot made
// by cryptsetup on a 64 GiB host may want 2 GiB of memory, which in a 1 GiB
// machine ends in "fatal error: runtime: out of memory", an error Go cannot
// recover from (in PID 1: a kernel panic). A hostile header can ask for 2^31
// passes and hang the boot instead. So the cost is read from the header and
// checked before the KDF runs.

// ErrKDFTooCostly: a keyslot's KDF needs more memory or time than the limits
// allow; the slot was not tried.
var ErrKDFTooCostly = errors.New("slot skipped: its KDF costs more than this machine allows (re-add the key with a smaller --pbkdf-memory, or open it on a bigger machine)")

// The rates KDFCost.Estimate assumes: about one core of a 2020s x86 server
// (measured here: argon2id fills 1 GiB/s on one lane, our PBKDF2-SHA256 does
// 5 million HMACs/s). A slower machine takes longer than the estimate: the
// time limit stops absurd headers, it does not promise a boot time.
const (
	argon2KiBPerSecond   = 1 << 20   // KiB of argon2 memory filled per second
	pbkdf2HMACsPerSecond = 2_000_000 // HMAC iterations per second
)

// DefaultKDFTime bounds a keyslot's estimated KDF time. cryptsetup's own
// slots take 2 s where they were made (and at most 4 GiB x 4 passes, an
// estimated 16 s); two minutes leaves room for slower machines and longer
// --iter-time while a header asking for hours is skipped.
const DefaultKDFTime = 2 * time.Minute

// KDFLimits bounds what one keyslot's KDF may cost. A zero field sets no
// bound.
type KDFLimits struct {
	Memory int64         // bytes of argon2 memory (the boot gives 90 % of MemAvailable)
	Time   time.Duration // estimated KDF time (see KDFCost.Estimate)
}

// DefaultKDFLimits are the limits for a machine with memAvailable bytes free
// (0: unknown, memory not bounded) and DefaultKDFTime.
func DefaultKDFLimits(memAvailable int64) KDFLimits {
	return KDFLimits{Memory: memAvailable, Time: DefaultKDFTime}
}

// KDFCost is what deriving one keyslot's key costs, read from the header
// without running the KDF.
type KDFCost struct {
	Type   string
	Memory int64 // bytes the KDF allocates: argon2 memory; 0 for pbkdf2
	Passes int64 // argon2 time cost
	HMACs  int64 // pbkdf2: iterations x output blocks
}

// Estimate is the KDF time at the rates above.
func (c KDFCost) Estimate() time.Duration {
	var sec float64
	switch {
	case c.HMACs > 0:
		sec = float64(c.HMACs) / pbkdf2HMACsPerSecond
	case c.Memory > 0:
		sec = float64(c.Memory>>10) * float64(c.Passes) / argon2KiBPerSecond
	}
	if sec >= math.MaxInt64/float64(time.Second) {
		return math.MaxInt64
	}
	return time.Duration(sec * float64(time.Second))
}

func (c KDFCost) String() string {
	if c.HMACs > 0 {
		return fmt.Sprintf("%s, %d HMAC iterations, about %s", c.Type, c.HMACs, roundEstimate(c.Estimate()))
	}
	return fmt.Sprintf("%s, %s x %d passes, about %s", c.Type, mib(c.Memory), c.Passes, roundEstimate(c.Estimate()))
}

func roundEstimate(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

func mib(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }

// KDFCost reports keyslot id's KDF cost.
func (h *Header) KDFCost(id int) (KDFCost, error) {
	ks, ok := h.Keyslots[id]
	if !ok {
		return KDFCost{}, fmt.Errorf("keyslot %d: %w", id, ErrSlotNotFound)
	}
	return ks.KDF.Cost(ks.Area.KeySize), nil
}

// Cost is what deriving a key of keyBytes with k costs: for a keyslot's
// KDF, keyBytes is its area's key size (pbkdf2 runs once per hash block).
func (k KDF) Cost(keyBytes int) KDFCost {
	c := KDFCost{Type: k.Type}
	switch k.Type {
	case "argon2id", "argon2i":
		c.Memory, c.Passes = int64(max(k.Memory, 0)), int64(max(k.Time, 0))
		if c.Memory > math.MaxInt64>>10 {
			c.Memory = math.MaxInt64
		} else {
			c.Memory <<= 10
		}
	case "pbkdf2":
		blocks := int64(1)
		if h, err := hashByName(k.Hash); err == nil {
			size := h().Size()
			blocks = int64((keyBytes + size - 1) / size)
		}
		c.HMACs = int64(max(k.Iterations, 0)) * max(blocks, 1)
	}
	return c
}

// CheckKDF returns an error wrapping ErrKDFTooCostly when keyslot id's KDF
// needs more memory or (estimated) time than l allows; it names the slot,
// what it needs and what the machine has. Unknown KDF types pass: the unlock
// rejects them without deriving.
func (h *Header) CheckKDF(id int, l KDFLimits) error {
	c, err := h.KDFCost(id)
	if err != nil {
		return err
	}
	if err := l.Allow(c); err != nil {
		return fmt.Errorf("keyslot %d: %w", id, err)
	}
	return nil
}

// Allow returns an error wrapping ErrKDFTooCostly when c needs more memory
// or (estimated) time than l allows, naming both.
func (l KDFLimits) Allow(c KDFCost) error {
	if l.Memory > 0 && c.Memory > l.Memory {
		return fmt.Errorf("%s needs %s of memory, %s available: %w", c.Type, mib(c.Memory), mib(l.Memory), ErrKDFTooCostly)
	}
	if l.Time > 0 && c.Estimate() > l.Time {
		return fmt.Errorf("%s would take about %s, the limit is %s: %w", c, roundEstimate(c.Estimate()), l.Time, ErrKDFTooCostly)
	}
	return nil
}

// UnlockWithin is Unlock with slot == AnySlot that skips the keyslots whose
// KDF l refuses (see CheckKDF), so a passphrase typed at the console is tried
// only on slots this machine can afford. skipped lists the refused slots'
// reasons (whatever the outcome); with no slot left to try, err wraps
// ErrKDFTooCostly.
func (h *Header) UnlockWithin(r io.ReaderAt, passphrase []byte, l KDFLimits) (key []byte, slot int, skipped []error, err error) {
	var try []int
	for _, id := range h.unlockOrder() {
		if err := h.CheckKDF(id, l); err != nil {
			skipped = append(skipped, err)
			continue
		}
		try = append(try, id)
	}
	if len(try) == 0 {
		return nil, -1, skipped, fmt.Errorf("unlock LUKS volume %s: every keyslot skipped: %w", h.UUID, errors.Join(skipped...))
	}
	var unusual error
	for _, id := range try {
		key, _, err := h.Unlock(r, passphrase, id)
		if err == nil {
			return key, id, skipped, nil
		}
		if !errors.Is(err, ErrNoKeyslotOpens) && unusual == nil {
			unusual = err
		}
	}
	if unusual != nil {
		return nil, -1, skipped, fmt.Errorf("unlock LUKS volume %s, tried slots %v: %w (also: %v)", h.UUID, try, ErrNoKeyslotOpens, unusual)
	}
	return nil, -1, skipped, fmt.Errorf("unlock LUKS volume %s, tried slots %v: %w", h.UUID, try, ErrNoKeyslotOpens)
}
