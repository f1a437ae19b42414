package swtpmtest

import (
	"net"
	"testing"
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
	port, conn, kill := start(tb, dir, ctrlPort) // no --flags: not powered on
	conn.Close()
	tb.Cleanup(kill)
	return port
}
