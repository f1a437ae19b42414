package luks2

import (
	"os"
	"testing"
	"time"
)

// BenchmarkUnlockVsCryptsetup times one keyslot unlock, ours (ReadHeader +
// Unlock of the slot) against `cryptsetup open --test-passphrase --key-slot`
// on the same header, side by side in one run. "ratio" = ours / cryptsetup;
// below 1 means we are faster.
func BenchmarkUnlockVsCryptsetup(b *testing.B) {
	needCryptsetup(b)
	pass := []byte("benchmark passphrase")
	for _, c := range []struct {
		name string
		kdf  KDF
	}{
		{"argon2id-64MiB-t4-p4", KDF{Type: "argon2id", Time: 4, Memory: 64 << 10, Parallel: 4}},
		{"pbkdf2-sha256-1M", KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000000}},
	} {
		b.Run(c.name, func(b *testing.B) {
			img := newImage(b, imageSize)
			if _, err := Format(openRW(b, img), imageSize, pass, FormatOptions{KDF: c.kdf, DigestIterations: 1000}); err != nil {
				b.Fatal(err)
			}
			kf := keyFile(b, pass)
			var ours, theirs time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				f, err := os.Open(img)
				if err != nil {
					b.Fatal(err)
				}
				h, err := ReadHeader(f)
				if err != nil {
					b.Fatal(err)
				}
				key, _, err := h.Unlock(f, pass, 0)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
				clear(key)
				ours += time.Since(t0)

				t0 = time.Now()
				mustCryptsetup(b, nil, "open", "--test-passphrase", "--key-slot", "0", "--key-file", kf, img)
				theirs += time.Since(t0)
			}
			b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ours-ms/op")
			b.ReportMetric(float64(theirs.Milliseconds())/float64(b.N), "cryptsetup-ms/op")
			b.ReportMetric(float64(ours)/float64(theirs), "ratio")
		})
	}
}
