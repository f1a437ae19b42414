package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// startSwtpm runs swtpm on loopback with a fresh state directory and returns
// a raw stream transport to its data port. It skips without swtpm.
func startSwtpm(tb testing.TB) transport.TPMCloser {
	tb.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		tb.Skipf("swtpm not installed (apt-get install swtpm): %v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			tb.Fatal(err)
		}
		dir := tb.TempDir()
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1),
			"--flags", "not-need-init,startup-clear",
			"--tpmstate", "dir="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start swtpm: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		conn, err := dialUntil(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited, 10*time.Second)
		if err != nil {
			stop()
			lastErr = fmt.Errorf("%w (swtpm: %s)", err, stderr.String())
			continue
		}
		t := NewStreamTransport(conn)
		tb.Cleanup(func() {
			_ = t.Close()
			stop()
		})
		return t
	}
	tb.Fatalf("swtpm did not come up: %v", lastErr)
	return nil
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
	return 0, errors.New("no free port pair")
}

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

// transientHandles counts loaded transient objects and sessions, to catch
// leaks (swtpm has no resource manager).
func transientHandles(tb testing.TB, t transport.TPM) int {
	tb.Helper()
	n := 0
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(ht) << 24, PropertyCount: 64}.Execute(t)
		if err != nil {
			tb.Fatal(err)
		}
		h, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			tb.Fatal(err)
		}
		for _, x := range h.Handle {
			if uint32(x)>>24 == uint32(ht) {
				n++
			}
		}
	}
	return n
}

func TestSwtpmRoundTrip(t *testing.T) {
	sw := startSwtpm(t)
	key, _ := signingKeys(t)
	bootTo(t, sw, "secureboot-on", ".linux", "kernel")
	s := NewSealer(sw, &StaticSource{Key: &key.PublicKey, Sigs: signCurrent(t, sw, key)})
	ctx := context.Background()
	sealed, err := s.Seal(ctx, secret32(), []int{7, 15})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unseal(ctx, sealed)
	if err != nil || !bytes.Equal(got, secret32()) {
		t.Fatalf("unseal: %x, %v", got, err)
	}
	if n := transientHandles(t, sw); n != 0 {
		t.Errorf("%d transient handles left loaded after seal and unseal", n)
	}
	if err := LatchVolumeKey(sw, "STATE", []byte("volume key"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("unseal after latch: err = %v, want ErrPCRMismatch", err)
	}
	if err := MeasurePhase(sw, PhaseLeaveInitrd, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unseal after leave-initrd: err = %v, want ErrNoSignature", err)
	}
	if n := transientHandles(t, sw); n != 0 {
		t.Errorf("%d transient handles left loaded after failed unseals", n)
	}
	// The leak check itself must see a leaked handle.
	p, err := createPrimary(sw, srkTemplate())
	if err != nil {
		t.Fatal(err)
	}
	if n := transientHandles(t, sw); n != 1 {
		t.Errorf("leak check counted %d handles with one primary loaded, want 1", n)
	}
	flush(sw, p.handle)
}
