package unlock

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// stepClock is a clock that moves only when told, so attempt durations
// are exact.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// slowKMS is fakeKMS whose round trips take fetch on clock.
type slowKMS struct {
	fakeKMS
	clock *stepClock
	fetch time.Duration
}

func (s *slowKMS) Seal(ctx context.Context, ep, node string, data []byte) ([]byte, error) {
	s.clock.advance(s.fetch)
	return s.fakeKMS.Seal(ctx, ep, node, data)
}

func (s *slowKMS) Unseal(ctx context.Context, ep, node string, sealed []byte) ([]byte, error) {
	s.clock.advance(s.fetch)
	return s.fakeKMS.Unseal(ctx, ep, node, sealed)
}

// TestAttemptSplitsKeyAndKDF: each attempt reports the key fetch and the
// KDF separately, and they add up to its duration, on a format, an open,
// and a failed open.
func TestAttemptSplitsKeyAndKDF(t *testing.T) {
	const fetch, kdf = 300 * time.Millisecond, 2 * time.Second
	clock := &stepClock{now: time.Unix(1000, 0)}
	kms := &slowKMS{clock: clock, fetch: fetch}
	e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, Now: clock.Now}
	e.unlockSlot = func(h *luks2.Header, r io.ReaderAt, pass []byte, slot int) ([]byte, int, error) {
		clock.advance(kdf)
		return h.Unlock(r, pass, slot)
	}
	y := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n" +
		"    - kms: {endpoint: grpc://kms:1}\n      slot: 0\n" + smallKDF
	vol := volume(t, y, "EPHEMERAL")
	dev := image(t, imageSize)

	first, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	first.Zero()
	if len(first.Attempts) != 1 {
		t.Fatalf("format attempts: %+v", first.Attempts)
	}
	if a := first.Attempts[0]; a.KeyDuration != fetch || a.KDFDuration != a.Duration-fetch {
		t.Errorf("format attempt: key %v kdf %v total %v, want key %v and kdf = total - key", a.KeyDuration, a.KDFDuration, a.Duration, fetch)
	}

	second, err := e.Unlock(ctx, vol, dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	second.Zero()
	if len(second.Attempts) != 1 {
		t.Fatalf("open attempts: %+v", second.Attempts)
	}
	if a := second.Attempts[0]; a.KeyDuration != fetch || a.KDFDuration != kdf || a.Duration != fetch+kdf {
		t.Errorf("open attempt: key %v kdf %v total %v, want %v + %v", a.KeyDuration, a.KDFDuration, a.Duration, fetch, kdf)
	}

	// KMS down: the fetch fails, so no KDF runs and the time is all key.
	kms.down = true
	_, err = e.Unlock(ctx, vol, dev, imageSize)
	oe, ok := err.(*OpenError)
	if !ok || len(oe.Attempts) != 1 {
		t.Fatalf("want an OpenError with one attempt, got %v", err)
	}
	if a := oe.Attempts[0]; a.KeyDuration != fetch || a.KDFDuration != 0 || a.Duration != fetch {
		t.Errorf("failed attempt: key %v kdf %v total %v, want %v + 0", a.KeyDuration, a.KDFDuration, a.Duration, fetch)
	}
}
