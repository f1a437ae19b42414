package swtpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// Port is the TCP command port of s (its control port is Port()+1), for
// clients that dial swtpm themselves ("swtpm:host=127.0.0.1,port=P").
// Close s.Conn first: swtpm serves one command connection at a time.
func (s *Swtpm) Port() int { return s.Conn.RemoteAddr().(*net.TCPAddr).Port }

// StartCold runs swtpm over the state in dir (a fresh temporary directory
// when "") as a machine's TPM before power-on: no connection is made and
// nothing is sent, so the first client must power it on through the
// control port and run TPM2_Startup, as tpm2-tss's swtpm TCTI users do. It
// returns the command port and stops swtpm at cleanup.
func StartCold(tb testing.TB, dir string) int {
	tb.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		testenv.Missing(tb, "swtpm not installed (apt-get install swtpm): %v", err)
	}
	if dir == "" {
		dir = tb.TempDir()
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--tpmstate", "dir="+dir)
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
		// wait for the control port: probing it sends no command
		conn, err := dialUntil(net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)), exited, 10*time.Second)
		if err != nil {
			kill()
			lastErr = fmt.Errorf("%w (swtpm: %s)", err, stderr.String())
			continue
		}
		conn.Close()
		tb.Cleanup(kill)
		return port
	}
	tb.Fatalf("swtpm on %s did not come up: %v", dir, lastErr)
	return 0
}
