package unlock

import (
	"errors"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// BenchmarkEngineOverhead measures, side by side in one run, the LUKS2 key
// derivation alone (luks2 Header.Unlock on a known slot: KDF, AF merge,
// digest) and what the engine adds on top:
//
//	open-overhead-%: (engine Open - KDF) / KDF: header read, key lookup, bookkeeping
//	decide-empty-%:  (ReadHeader -> ErrNotLUKS, then probe of an empty partition) / KDF
//
// Each figure is the fastest of its runs: the machine is shared, and the
// minimum is the cost without interference. Each op runs every step five
// times, interleaved, order alternating.
//
// Costs are the test costs of configs/ (argon2id 16 MiB, 2 iterations); a
// production KDF is slower, so the shares there are smaller still.
func BenchmarkEngineOverhead(b *testing.B) {
	vol := configFile(b, "static-rotation-1.yaml", "EPHEMERAL")
	dev := image(b, imageSize)
	e := &Engine{}
	if r, err := e.Unlock(ctx, vol, dev, imageSize); err != nil {
		b.Fatal(err)
	} else {
		r.Zero()
	}
	empty := image(b, imageSize)
	pass := []byte("oldkey")

	const reps = 5
	kdf, open, decide := time.Duration(1<<62), time.Duration(1<<62), time.Duration(1<<62)
	b.ResetTimer()
	for i := 0; i < b.N*reps; i++ {
		measureKDF := func() {
			hdr, err := luks2.ReadHeader(dev)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			vk, _, err := hdr.Unlock(dev, pass, 0)
			kdf = min(kdf, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			keys.Zero(vk)
		}
		measureOpen := func() {
			t1 := time.Now()
			r, err := e.Open(ctx, vol, dev)
			open = min(open, time.Since(t1))
			if err != nil {
				b.Fatal(err)
			}
			r.Zero()
		}
		if i%2 == 0 { // alternate the order so neither gains from a warm cache
			measureKDF()
			measureOpen()
		} else {
			measureOpen()
			measureKDF()
		}

		t2 := time.Now()
		_, err := luks2.ReadHeader(empty)
		if !errors.Is(err, luks2.ErrNotLUKS) {
			b.Fatal(err)
		}
		res, err := probe.CheckEmpty(empty, imageSize)
		decide = min(decide, time.Since(t2))
		if err != nil || !res.Empty() {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(kdf.Microseconds())/1000, "kdf-ms")
	b.ReportMetric(float64(open.Microseconds())/1000, "open-ms")
	b.ReportMetric(float64(decide.Microseconds())/1000, "decide-ms")
	b.ReportMetric(100*float64(open-kdf)/float64(kdf), "open-overhead-%")
	b.ReportMetric(100*float64(decide)/float64(kdf), "decide-empty-%")
}
