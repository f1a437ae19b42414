// Package swtpmtest runs Debian's swtpm on loopback for tests, the way
// net/http/httptest runs servers: swtpm's TCP data port speaks raw TPM
// commands, which tpm.NewStreamTransport turns into a transport. It does not
// import the tpm package, so the tpm package's own tests can use it.
package swtpmtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// Swtpm is a running swtpm process and a connection to its data port.
type Swtpm struct {
	Conn net.Conn
	stop func()
}

// Stop closes the connection and ends swtpm, leaving its state directory
// for a later user (a VM, another Start). Safe to call more than once.
func (s *Swtpm) Stop() { s.stop() }

// Start runs swtpm (TPM 2.0, started, no init needed) over the TPM state in
// dir, or in a fresh temporary directory when dir is "", and connects to its
// data port. Without swtpm it skips the test (fails it under
// CRYPTINIT_STRICT=1 or CRYPTINIT_VM=1); it stops swtpm at cleanup.
func Start(tb testing.TB, dir string) *Swtpm {
	tb.Helper()
	_, conn, kill := start(tb, dir, dataPort, "--flags", "not-need-init,startup-clear")
	var once sync.Once
	s := &Swtpm{Conn: conn, stop: func() {
		once.Do(func() {
			_ = conn.Close()
			kill()
		})
	}}
	tb.Cleanup(s.Stop)
	return s
}

// Which port start waits on: a connection to the data port lets a client
// send commands; probing the control port sends none.
const (
	dataPort = 0
	ctrlPort = 1
)

// start runs swtpm socket --tpm2 over dir (a fresh temporary directory when
// "") with extraArgs, on a loopback port pair (data port, control port + 1),
// until the port at offset probe (dataPort or ctrlPort) answers. It returns
// the data port, the connection to the probed port and a kill that ends
// swtpm; the caller registers the cleanup.
func start(tb testing.TB, dir string, probe int, extraArgs ...string) (int, net.Conn, func()) {
	tb.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		testenv.Missing(tb, "swtpm not installed (apt-get install swtpm): %v", err)
	}
	if dir == "" {
		dir = tb.TempDir()
	}
	var lastErr error
	// Another process may take the free ports between the probe and swtpm's
	// bind: try a few pairs.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			tb.Fatal(err)
		}
		args := append([]string{"socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--tpmstate", "dir=" + dir}, extraArgs...)
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start swtpm on %s: %v", dir, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		kill := func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		conn, err := dialUntil(net.JoinHostPort("127.0.0.1", strconv.Itoa(port+probe)), exited, 10*time.Second)
		if err != nil {
			kill()
			lastErr = fmt.Errorf("%w (swtpm: %s)", err, stderr.String())
			continue
		}
		return port, conn, kill
	}
	tb.Fatalf("swtpm on %s did not come up: %v", dir, lastErr)
	return 0, nil, nil
}

// freePortPair finds a loopback port p with p+1 also free (data, control).
func freePortPair() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free loopback port pair")
}

// dialUntil dials addr until it answers, swtpm exits, or limit passes.
func dialUntil(addr string, exited <-chan error, limit time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("swtpm exited: %v", werr)
		default:
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
