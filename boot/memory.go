package boot

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"golang.org/x/sync/semaphore"
)

// memLimiter keeps concurrent unlocks within the machine's memory: each
// holds the argon2 memory of its costliest keyslot while it runs.
type memLimiter struct {
	sem      *semaphore.Weighted
	capacity int64

	mu    sync.Mutex
	holds map[string]*memHold // by volume: what pauseFor gives back
}

// memHold is one volume's reservation, made by acquireFor.
type memHold struct {
	ctx     context.Context
	cost    int64
	release func() // nil while paused
}

// minKDFCost is charged for KDFs that need next to no memory (pbkdf2).
const minKDFCost = 1 << 20

func newMemLimiter(available int64) *memLimiter {
	if available < minKDFCost {
		available = minKDFCost
	}
	return &memLimiter{sem: semaphore.NewWeighted(available), capacity: available}
}

// acquire waits until cost bytes are free. A cost above the capacity waits
// for the whole machine (it may still fit: MemAvailable is conservative).
func (l *memLimiter) acquire(ctx context.Context, cost int64) (release func(), err error) {
	if cost < minKDFCost {
		cost = minKDFCost
	}
	if cost > l.capacity {
		cost = l.capacity
	}
	if err := l.sem.Acquire(ctx, cost); err != nil {
		return nil, err
	}
	return func() { l.sem.Release(cost) }, nil
}

// acquireFor is acquire for an unlock of volume that may stop to ask a
// person (a TPM PIN): pauseFor gives the memory back while they are asked.
func (l *memLimiter) acquireFor(ctx context.Context, volume string, cost int64) (release func(), err error) {
	rel, err := l.acquire(ctx, cost)
	if err != nil {
		return nil, err
	}
	h := &memHold{ctx: ctx, cost: cost, release: rel}
	l.mu.Lock()
	if l.holds == nil {
		l.holds = map[string]*memHold{}
	}
	l.holds[volume] = h
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.holds, volume)
		rel := h.release
		h.release = nil
		l.mu.Unlock()
		if rel != nil {
			rel()
		}
	}, nil
}

// pauseFor runs ask (a question to a person, who may take minutes or
// never answer) without volume's reservation, so that other volumes'
// KDFs run meanwhile and a volume that holds the console while it waits
// for memory cannot wait on us. It then waits for the memory again; an
// error means the boot's context ended first. Without a reservation (or
// a limiter) it just runs ask.
func (l *memLimiter) pauseFor(volume string, ask func()) error {
	if l == nil {
		ask()
		return nil
	}
	l.mu.Lock()
	h := l.holds[volume]
	var rel func()
	if h != nil {
		rel, h.release = h.release, nil
	}
	l.mu.Unlock()
	if rel == nil {
		ask()
		return nil
	}
	rel()
	ask()
	again, err := l.acquire(h.ctx, h.cost)
	if err != nil {
		return err
	}
	l.mu.Lock()
	h.release = again
	l.mu.Unlock()
	return nil
}

// kdfLimits bounds each keyslot's KDF (see luks2.CheckKDF): at most the
// memory the limiter has (90 % of MemAvailable; unbounded when unknown) and
// luks2.DefaultKDFTime. A slot that costs more is skipped with its reason,
// never derived: a KDF the machine cannot afford ends in an out-of-memory
// fatal error that kills PID 1, or a boot that never ends.
func (b *Boot) kdfLimits() luks2.KDFLimits {
	return luks2.DefaultKDFLimits(max(b.MemAvailable, 0))
}

// kdfCost is the memory the volume's unlock needs at most: the largest
// argon2 memory among its keyslots that lim lets run, or for a partition
// without a LUKS header the memory new keyslots will get.
func kdfCost(dev io.ReaderAt, vol *config.Volume, lim luks2.KDFLimits) int64 {
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		kib := luks2.DefaultKDF().Memory
		if vol != nil && vol.Encryption != nil && vol.Encryption.KDF != nil {
			k := vol.Encryption.KDF
			switch {
			case k.Type == "pbkdf2":
				kib = 0
			case k.MemoryKiB > 0:
				kib = k.MemoryKiB
			}
		}
		return int64(kib) << 10
	}
	var max int64
	for id, ks := range hdr.Keyslots {
		if hdr.CheckKDF(id, lim) != nil {
			continue // skipped, never derived
		}
		if strings.HasPrefix(ks.KDF.Type, "argon2") && int64(ks.KDF.Memory)<<10 > max {
			max = int64(ks.KDF.Memory) << 10
		}
	}
	return max
}

// MemAvailable reads MemAvailable from a /proc/meminfo file, in bytes.
func MemAvailable(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no MemAvailable in " + path)
}
