package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// BenchmarkServerCPUPerUnseal: the CPU time a real kms-server process spends
// per unseal, read from its /proc/PID/stat (user + system, all threads), so
// the load generator's own CPU does not count. "fresh-tls" opens a new TLS
// connection per unseal, as a booting node does (TLS 1.3 handshake with
// X25519MLKEM768 and the lab PKI's ECDSA P-256 server certificate, no
// resumption: a node's first request after boot has no session to resume);
// "reused-tls" sends every unseal on one connection. The audit log goes to
// a file, as in production.
func BenchmarkServerCPUPerUnseal(b *testing.B) {
	dir := b.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pki := filepath.Join(dir, "pki")
	if err := run(context.Background(), []string{"--generate-tls", pki, "--san", "localhost,127.0.0.1"}, log); err != nil {
		b.Fatal(err)
	}
	addr := freePort(b)
	cmd := exec.Command(os.Args[0], "--listen", addr, "--http-listen", "", "--rate", "0",
		"--keyring", filepath.Join(dir, "keyring.json"), "--audit-log", filepath.Join(dir, "audit.jsonl"),
		"--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"))
	cmd.Env = append(os.Environ(), "KMS_SERVER_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitListening(b, addr)

	cas, err := kms.LoadCAs(filepath.Join(pki, "ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ep := "https://localhost:" + addr[strings.LastIndex(addr, ":")+1:]
	const node = "00000000-0000-4000-8000-000000000001"
	seal := kms.New(kms.Options{RootCAs: cas, Attempts: 1})
	blob, err := seal.Seal(ctx, ep, node, []byte("0123456789abcdef0123456789abcdef"))
	seal.Close()
	if err != nil {
		b.Fatal(err)
	}
	unseal := func(cl *kms.Client) {
		if _, err := cl.Unseal(ctx, ep, node, blob); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name  string
		batch int
		fresh bool
	}{{"fresh-tls", 1000, true}, {"reused-tls", 5000, false}} {
		b.Run(bc.name, func(b *testing.B) {
			shared := kms.New(kms.Options{RootCAs: cas, Attempts: 1})
			defer shared.Close()
			unseal(shared) // connect (and warm up) outside the measurement
			var cpu time.Duration
			n := 0
			for b.Loop() {
				before := processCPU(b, cmd.Process.Pid)
				for range bc.batch {
					if bc.fresh {
						cl := kms.New(kms.Options{RootCAs: cas, Attempts: 1})
						unseal(cl)
						cl.Close()
					} else {
						unseal(shared)
					}
				}
				cpu += processCPU(b, cmd.Process.Pid) - before
				n += bc.batch
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(n), "server-us/unseal")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "unseals/s")
		})
	}
}

// processCPU is a process's user + system time from /proc/PID/stat (all
// its threads; clock ticks of 10 ms, hence the batches above).
func processCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func waitListening(tb testing.TB, addr string) {
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if i == 100 {
			tb.Fatalf("kms-server never listened on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
