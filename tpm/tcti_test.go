package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
)

func TestParseDevice(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Device
		err  string
	}{
		{"", Device{}, ""},
		{"/dev/tpmrm0", Device{Path: "/dev/tpmrm0"}, ""},
		{"device:/dev/tpm0", Device{Path: "/dev/tpm0"}, ""},
		{"swtpm:host=127.0.0.1,port=2321", Device{Host: "127.0.0.1", Port: 2321}, ""},
		{"swtpm:port=4000", Device{Host: "127.0.0.1", Port: 4000}, ""},
		{"swtpm:host=::1,port=4000", Device{Host: "::1", Port: 4000}, ""},
		{"swtpm:", Device{Host: "127.0.0.1", Port: DefaultSwtpmPort}, ""},
		{"swtpm:port=65535", Device{}, "not 1..65534"},
		{"swtpm:port=x", Device{}, "not 1..65534"},
		{"swtpm:path=/x", Device{}, "unknown key"},
		{"swtpm:4000", Device{}, "not key=value"},
		{"mssim:port=2321", Device{}, "want a device path"},
		{"tpmrm0", Device{}, "want a device path"},
	} {
		got, err := ParseDevice(tc.spec)
		if tc.err != "" {
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
				t.Errorf("ParseDevice(%q) = %+v, %v; want error with %q", tc.spec, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDevice(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

// TestOpenSpecNoTPM: a missing device or a port nobody serves is ErrNoTPM,
// which callers report as "no TPM".
func TestOpenSpecNoTPM(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	for _, spec := range []string{"/nonexistent/tpmrm0", fmt.Sprintf("swtpm:port=%d", port)} {
		if _, err := OpenSpec(spec); !errors.Is(err, ErrNoTPM) {
			t.Errorf("OpenSpec(%q): %v, want ErrNoTPM", spec, err)
		}
	}
}

// TestOpenSwtpmCold: a swtpm that was never powered on (as a VM's TPM
// before boot, or one started for systemd-cryptenroll) is powered on and
// started by the first open; a second open finds it running and leaves its
// PCRs alone.
func TestOpenSwtpmCold(t *testing.T) {
	port := swtpmtest.StartCold(t, "")
	spec := fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)
	tp, err := OpenSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("secure boot on"))
	if err := ExtendPCR(tp, SecureBootPCR, d[:]); err != nil {
		t.Fatalf("extend after cold open: %v", err)
	}
	want, err := ReadPCRs(tp, []int{SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()

	tp, err = OpenSpec(fmt.Sprintf("swtpm:port=%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	got, err := ReadPCRs(tp, []int{SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], want[0]) {
		t.Fatalf("PCR 7 after reopening: %x, want %x (the second open reset the TPM)", got[0], want[0])
	}
}

// TestOpenSwtpmSilent: a swtpm port that accepts and never answers fails
// the open within the command timeout, or as soon as the context ends,
// instead of hanging the caller.
func TestOpenSwtpmSilent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, read nothing, answer nothing
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	open := func(ctx context.Context, d Device) error {
		done := make(chan error, 1)
		go func() {
			tp, err := d.OpenContext(ctx)
			if err == nil {
				tp.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatalf("open %v on a silent swtpm still hangs after 10s", d)
			return nil
		}
	}
	start := time.Now()
	err = open(context.Background(), Device{Host: "127.0.0.1", Port: port, CommandTimeout: 200 * time.Millisecond})
	if d := time.Since(start); err == nil || d > 5*time.Second {
		t.Fatalf("command timeout: open = %v after %v, want an error within the timeout", err, d)
	}
	t.Logf("command timeout: %v", err)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = open(ctx, Device{Host: "127.0.0.1", Port: port}) // default timeout: minutes
	if d := time.Since(start); err == nil || d > 5*time.Second {
		t.Fatalf("context: open = %v after %v, want an error when the context ends", err, d)
	}
}
