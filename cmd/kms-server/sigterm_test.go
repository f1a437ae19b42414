package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/netboot/kms"
)

// TestMain lets a test run this binary as kms-server itself (a real process
// to send SIGTERM to).
func TestMain(m *testing.M) {
	if os.Getenv("KMS_SERVER_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSIGTERMFlushesAudit: a kms-server whose stdout audit log nobody reads
// (the pipe and the writer's buffer full) still answers every request, and
// on SIGTERM writes out every queued record before it exits: one line per
// request, none lost. A synchronous audit log blocked the requests on the
// full pipe instead.
func TestSIGTERMFlushesAudit(t *testing.T) {
	const requests = 1500 // ~300 KB of audit, more than the pipe and the writer's buffer hold
	addr := freePort(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "--listen", addr, "--http-listen", "", "--insecure-plaintext",
		"--keyring", filepath.Join(t.TempDir(), "keyring.json"), "--audit-log", "-", "--rate", "0")
	cmd.Env = append(os.Environ(), "KMS_SERVER_TEST_MAIN=1")
	cmd.Stdout = w
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	defer cmd.Process.Kill()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("kms-server never listened on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := kms.New(kms.Options{Attempts: 1})
	defer cl.Close()
	ep := "grpc://" + addr
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < requests; i += 4 {
				node := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
				if _, err := cl.Seal(ctx, ep, node, []byte("0123456789abcdef")); err != nil {
					errs <- fmt.Errorf("seal %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("with the audit pipe full: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	lines := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines++
		if i := strings.Index(sc.Text(), `"node_uuid":"`); i >= 0 {
			seen[sc.Text()[i+13:i+13+36]] = true
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kms-server after SIGTERM: %v", err)
	}
	if lines != requests || len(seen) != requests {
		t.Fatalf("audit log after SIGTERM has %d lines for %d nodes, want %d of each", lines, len(seen), requests)
	}
}
