package unlock

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// BenchmarkEngineOverhead measures, side by side in one run, the engine's
// own cost next to the LUKS2 key derivation (Header.Unlock on one slot: KDF,
// AF merge, digest):
//
//	open-overhead-%:   engine Open, minus the time inside Header.Unlock, / that time
//	unlock-overhead-%: the same for Unlock of a two-key volume (open + sync that
//	                   finds its fingerprint unchanged)
//	decide-empty-%:    ReadHeader -> ErrNotLUKS, then the probe of an empty
//	                   20 MiB partition (fastest of 5 per op), / the fastest Header.Unlock
//
// The KDF time is measured inside the same calls (the engine's unlock hook),
// so a loaded machine slows both sides alike; the overheads are the median
// over the ops, so one preempted op does not decide the figure. Costs are the test costs of
// configs/ (argon2id 16 MiB, 2 iterations); a production KDF is slower, so
// the shares there are smaller still.
func BenchmarkEngineOverhead(b *testing.B) {
	var inside time.Duration
	e := &Engine{}
	e.unlockSlot = func(h *luks2.Header, r io.ReaderAt, pass []byte, slot int) ([]byte, int, error) {
		t := time.Now()
		defer func() { inside += time.Since(t) }()
		return h.Unlock(r, pass, slot)
	}
	vol := configFile(b, "static-rotation-1.yaml", "EPHEMERAL")
	dev := image(b, imageSize)
	vol2 := configFile(b, "static-rotation-2.yaml", "EPHEMERAL")
	dev2 := image(b, imageSize)
	for _, v := range []struct {
		vol  func() (*Result, error)
		runs int
	}{
		{func() (*Result, error) { return e.Unlock(ctx, vol, dev, imageSize) }, 1},
		{func() (*Result, error) { return e.Unlock(ctx, vol2, dev2, imageSize) }, 2}, // format, then the sync that stores the fingerprint
	} {
		for i := 0; i < v.runs; i++ {
			r, err := v.vol()
			if err != nil {
				b.Fatal(err)
			}
			r.Zero()
		}
	}
	empty := image(b, imageSize)

	var openShare, unlockShare []float64 // engine time / KDF time, per op
	fastestKDF, decide := time.Duration(1<<62), time.Duration(1<<62)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		inside = 0
		t := time.Now()
		r, err := e.Open(ctx, vol, dev)
		openShare = append(openShare, float64(time.Since(t)-inside)/float64(inside))
		fastestKDF = min(fastestKDF, inside)
		if err != nil {
			b.Fatal(err)
		}
		r.Zero()

		inside = 0
		t = time.Now()
		r, err = e.Unlock(ctx, vol2, dev2, imageSize)
		unlockShare = append(unlockShare, float64(time.Since(t)-inside)/float64(inside))
		if err != nil || !r.Sync.UpToDate {
			b.Fatal(err, r.Sync)
		}
		r.Zero()

		for range 5 { // cheap: take the fastest of a few
			t = time.Now()
			_, err = luks2.ReadHeader(empty)
			if !errors.Is(err, luks2.ErrNotLUKS) {
				b.Fatal(err)
			}
			res, err := probe.CheckEmpty(empty, imageSize)
			decide = min(decide, time.Since(t))
			if err != nil || !res.Empty() {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(fastestKDF.Microseconds())/1000, "kdf-ms")
	b.ReportMetric(100*median(openShare), "open-overhead-%")
	b.ReportMetric(100*median(unlockShare), "unlock-overhead-%")
	b.ReportMetric(100*float64(decide)/float64(fastestKDF), "decide-empty-%")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
