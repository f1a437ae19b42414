package server

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
	"github.com/cryptinit/cryptinit/netboot/kms"
)

// Storm sizes: every benchmark iteration is one whole storm. `make bench`
// runs 1+3 iterations on a shared 2-core machine, so the default storm is
// 5,000 nodes; CRYPTINIT_STORM_NODES=10000 runs the full-size one. tangd
// forks a process per connection, so its storm is smaller; the two are
// compared per call.
const (
	defaultStormCalls = 5000
	stormClients      = 200
	tangCalls         = 400
)

func stormCalls() int {
	if n, err := strconv.Atoi(os.Getenv("CRYPTINIT_STORM_NODES")); err == nil && n > 0 {
		return n
	}
	return defaultStormCalls
}

// BenchmarkBootStorm: stormCalls() nodes boot at once, stormClients at a time;
// each node opens its own TLS connection and unseals its key, as a booting
// node would. In the same run, Debian's tang answers its recovery request
// (POST /rec/<kid>, an ECMR exchange) the way clevis asks at boot, one
// socket-activated tangd per connection, also stormClients at a time; the
// rates are reported side by side and as a ratio. Memory: the Go heap peak
// and the process's peak RSS during the KMS storm (server and clients share
// the process).
func BenchmarkBootStorm(b *testing.B) {
	p := newPKI(b)
	ring, err := keyring.Generate()
	if err != nil {
		b.Fatal(err)
	}
	_, ep := serve(b, Config{Keyring: ring, Audit: io.Discard}, p, "tls")
	cas, err := kms.LoadCAs(p.path("ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	calls := stormCalls()
	nodes := make([]string, calls)
	blobs := make([][]byte, calls)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		blobs[i] = ring.Seal(nodes[i], []byte(fmt.Sprintf("key-of-node-%d-0123456789abcdef", i)))
	}
	tang, tangErr := startTang(b)
	if tangErr != nil {
		b.Logf("tang side of the comparison skipped: %v", tangErr)
	}

	var kmsLat, tangLat []time.Duration
	var kmsTime, tangTime time.Duration
	var peakHeap, peakRSS uint64
	b.ResetTimer()
	for range b.N {
		resetPeakRSS()
		stop := sampleHeap(&peakHeap)
		start := time.Now()
		lat, err := storm(calls, stormClients, func(i int) error {
			cl := kms.New(kms.Options{RootCAs: cas, Attempts: 1, AttemptTimeout: 2 * time.Minute})
			defer cl.Close()
			key, err := cl.Unseal(context.Background(), ep, nodes[i], blobs[i])
			if err == nil && !strings.HasPrefix(string(key), "key-of-node-") {
				err = fmt.Errorf("node %d got a wrong key", i)
			}
			return err
		})
		kmsTime += time.Since(start)
		stop()
		peakRSS = max(peakRSS, readPeakRSS())
		if err != nil {
			b.Fatal(err)
		}
		kmsLat = append(kmsLat, lat...)

		if tang != nil {
			start = time.Now()
			lat, err := storm(tangCalls, stormClients, func(int) error { return tang.recover() })
			tangTime += time.Since(start)
			if err != nil {
				// tang is the yardstick, not the product: drop its figures
				// rather than the whole benchmark.
				b.Logf("tang storm failed, its figures are left out: %v", err)
				tang = nil
				continue
			}
			tangLat = append(tangLat, lat...)
		}
	}
	b.StopTimer()
	kmsRate := float64(len(kmsLat)) / kmsTime.Seconds()
	b.ReportMetric(kmsRate, "unseals/s")
	b.ReportMetric(ms(percentile(kmsLat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(kmsLat, 99)), "p99-ms")
	b.ReportMetric(float64(peakHeap)/1e6, "peak-heap-MB")
	if peakRSS > 0 {
		b.ReportMetric(float64(peakRSS)/1e6, "peak-RSS-MB")
	}
	if tang != nil && len(tangLat) > 0 {
		tangRate := float64(len(tangLat)) / tangTime.Seconds()
		b.ReportMetric(tangRate, "tang-recs/s")
		b.ReportMetric(ms(percentile(tangLat, 50)), "tang-p50-ms")
		b.ReportMetric(ms(percentile(tangLat, 99)), "tang-p99-ms")
		b.ReportMetric(kmsRate/tangRate, "kms/tang-rate")
	}
}

// storm runs calls calls of fn, clients at a time, and returns each call's
// latency; the first error stops it.
func storm(calls, clients int, fn func(i int) error) ([]time.Duration, error) {
	lat := make([]time.Duration, calls)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= calls {
					return
				}
				t := time.Now()
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("call %d: %w", i, err) })
					next.Store(int64(calls))
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	return lat, firstErr
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sampleHeap records the peak live heap until the returned stop is called.
func sampleHeap(peak *uint64) (stop func()) {
	sample := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			rtmetrics.Read(sample)
			*peak = max(*peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// resetPeakRSS resets VmHWM (Linux: writing 5 to clear_refs).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func readPeakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// tangServer is Debian's tangd behind a loopback listener that starts one
// tangd per connection with the connection as stdin and stdout, as systemd's
// tangd.socket (Accept=yes) does.
type tangServer struct {
	url    string
	kid    string
	pub    *ecdh.PublicKey // the exchange (ECMR) key's public half
	client *http.Client
}

const tangd = "/usr/libexec/tangd"

func startTang(b *testing.B) (*tangServer, error) {
	for _, f := range []string{tangd, tangd + "-keygen"} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("tang is not installed (%s): %w", f, err)
		}
	}
	dir := b.TempDir()
	if out, err := exec.Command(tangd+"-keygen", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tangd-keygen: %v: %s", err, out)
	}
	ts := &tangServer{client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Minute}}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jwk"))
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if k.Alg == "ECMR" {
			ts.kid = strings.TrimSuffix(filepath.Base(f), ".jwk")
			if ts.pub, err = k.public(); err != nil {
				return nil, err
			}
		}
	}
	if ts.kid == "" {
		return nil, fmt.Errorf("tangd-keygen made no ECMR key in %s", dir)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				f, err := c.(*net.TCPConn).File()
				if err != nil {
					return
				}
				defer f.Close()
				cmd := exec.Command(tangd, dir)
				cmd.Stdin, cmd.Stdout = f, f
				cmd.Run()
			}()
		}
	}()
	ts.url = "http://" + lis.Addr().String()
	if err := ts.recover(); err != nil {
		return nil, fmt.Errorf("tang recovery check: %w", err)
	}
	return ts, nil
}

// jwk is the EC subset of a JSON Web Key.
type jwk struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	Alg    string   `json:"alg,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
}

const p521Len = 66

func (k jwk) public() (*ecdh.PublicKey, error) {
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil {
		return nil, err
	}
	y, err := base64.RawURLEncoding.DecodeString(k.Y)
	if err != nil {
		return nil, err
	}
	if k.Crv != "P-521" || len(x) > p521Len || len(y) > p521Len {
		return nil, fmt.Errorf("want a P-521 point, got %s with %d/%d-byte coordinates", k.Crv, len(x), len(y))
	}
	pt := make([]byte, 1+2*p521Len)
	pt[0] = 4
	copy(pt[1+p521Len-len(x):], x)
	copy(pt[1+2*p521Len-len(y):], y)
	return ecdh.P521().NewPublicKey(pt)
}

func jwkOf(pub *ecdh.PublicKey) jwk {
	pt := pub.Bytes()
	return jwk{Kty: "EC", Crv: "P-521", X: base64.RawURLEncoding.EncodeToString(pt[1 : 1+p521Len]),
		Y: base64.RawURLEncoding.EncodeToString(pt[1+p521Len:])}
}

// recover does what clevis does at boot: send a blinded point, get it
// multiplied by the server's exchange key. The answer is checked: its x
// coordinate must equal ECDH(ours, server's public key).
func (t *tangServer) recover() error {
	priv, err := ecdh.P521().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	req := jwkOf(priv.PublicKey())
	req.Alg, req.KeyOps = "ECMR", []string{"deriveKey"}
	body, _ := json.Marshal(req)
	resp, err := t.client.Post(t.url+"/rec/"+t.kid, "application/jwk+json", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tang: %s: %s", resp.Status, raw)
	}
	var got jwk
	if err := json.Unmarshal(raw, &got); err != nil {
		return fmt.Errorf("tang answer %q: %w", raw, err)
	}
	pt, err := got.public()
	if err != nil {
		return fmt.Errorf("tang answer: %w", err)
	}
	want, err := priv.ECDH(t.pub)
	if err != nil {
		return err
	}
	if string(pt.Bytes()[1:1+p521Len]) != string(want) {
		return fmt.Errorf("tang answer is not our point times its key")
	}
	return nil
}
