package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
	"golang.org/x/sys/unix"
)

// fakeTTY is a command stdin that claims to be a terminal on which the
// operator types lines (without their Enter, as term.ReadPassword gives).
type fakeTTY struct {
	lines []string
	asked int
}

func (f *fakeTTY) Read([]byte) (int, error) {
	return 0, errors.New("read from a terminal without a prompt")
}
func (f *fakeTTY) IsTerminal() bool { return true }
func (f *fakeTTY) ReadPassword() ([]byte, error) {
	if f.asked >= len(f.lines) {
		return nil, io.EOF
	}
	f.asked++
	return []byte(f.lines[f.asked-1]), nil
}

// cryptctlIn runs the command line in-process with stdin and returns
// stdout+stderr and the exit code.
func cryptctlIn(stdin io.Reader, args ...string) (string, int) {
	var out bytes.Buffer
	code := run(args, stdin, &out, &out)
	return out.String(), code
}

var cheapKDF = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}

func TestPassphraseFromTerminal(t *testing.T) {
	img := luks2test.NewImage(t, 16<<20)
	tty := &fakeTTY{lines: []string{"secret", "secret"}}
	out, code := cryptctlIn(tty, append([]string{"luks", "format", img, "--key-file", "-"}, cheapKDF...)...)
	if code != 0 {
		t.Fatalf("format from a terminal: exit %d: %s", code, out)
	}
	if !strings.Contains(out, "Enter new passphrase for "+img+":") || !strings.Contains(out, "Verify passphrase:") {
		t.Errorf("format prompts %q, want an Enter and a Verify prompt naming %s", out, img)
	}
	// The typed passphrase, without a newline, is the key.
	if out, code := cryptctlIn(nil, "luks", "test-key", img, "--key-file", luks2test.KeyFile(t, []byte("secret"))); code != 0 {
		t.Fatalf("test-key with the typed passphrase: exit %d: %s", code, out)
	}
	out, code = cryptctlIn(&fakeTTY{lines: []string{"secret"}}, "luks", "test-key", img, "--key-file", "-")
	if code != 0 || !strings.Contains(out, "Enter passphrase for "+img+":") {
		t.Fatalf("test-key from a terminal: exit %d: %s", code, out)
	}

	for _, c := range []struct {
		name  string
		args  []string
		lines []string
		want  string
	}{
		{"format mismatch", []string{"luks", "format", luks2test.NewImage(t, 16<<20), "--key-file", "-", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, []string{"a", "b"}, "passphrases do not match"},
		{"add-key mismatch", []string{"luks", "add-key", img, "--key-file", luks2test.KeyFile(t, []byte("secret")), "--new-key-file", "-", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, []string{"new1", "new2"}, "passphrases do not match"},
		{"change-key mismatch", []string{"luks", "change-key", img, "--key-file", luks2test.KeyFile(t, []byte("secret")), "--new-key-file", "-", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, []string{"new1", "new2"}, "passphrases do not match"},
		{"empty", []string{"luks", "test-key", img, "--key-file", "-"}, []string{""}, "empty passphrase"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := cryptctlIn(&fakeTTY{lines: c.lines}, c.args...)
			if code == 0 || !strings.Contains(out, c.want) {
				t.Fatalf("exit %d, output %q; want a failure saying %q", code, out, c.want)
			}
		})
	}
	// A mismatch changed nothing: neither new passphrase opens a slot.
	for _, k := range []string{"new1", "new2"} {
		if out, code := cryptctlIn(nil, "luks", "test-key", img, "--key-file", luks2test.KeyFile(t, []byte(k))); code != 2 {
			t.Errorf("after a mismatch, %q: exit %d, want 2: %s", k, code, out)
		}
	}
	// add-key asks twice and the new passphrase opens a slot.
	if out, code := cryptctlIn(&fakeTTY{lines: []string{"other", "other"}}, append([]string{"luks", "add-key", img, "--key-file", luks2test.KeyFile(t, []byte("secret")), "--new-key-file", "-"}, cheapKDF...)...); code != 0 {
		t.Fatalf("add-key from a terminal: exit %d: %s", code, out)
	}
	if out, code := cryptctlIn(nil, "luks", "test-key", img, "--key-file", luks2test.KeyFile(t, []byte("other"))); code != 0 {
		t.Fatalf("test-key with the added passphrase: exit %d: %s", code, out)
	}
}

func TestPassphraseFromPipeKeepsNewline(t *testing.T) {
	img := luks2test.NewImage(t, 16<<20)
	if out, code := cryptctlIn(strings.NewReader("secret"), append([]string{"luks", "format", img, "--key-file", "-"}, cheapKDF...)...); code != 0 {
		t.Fatalf("format from a pipe: exit %d: %s", code, out)
	}
	const hint = "ends with a newline"
	// Bytes from a pipe are the key as they are: "secret\n" is not "secret".
	out, code := cryptctlIn(strings.NewReader("secret\n"), "luks", "test-key", img, "--key-file", "-")
	if code != 2 || !strings.Contains(out, hint) || !strings.Contains(out, "printf '%s'") {
		t.Errorf("test-key with a newline from stdin: exit %d, %q; want exit 2 and the newline hint", code, out)
	}
	out, code = cryptctlIn(strings.NewReader("secret\n"), "luks", "remove-key", img, "--key-slot", "0", "--key-file", "-")
	if code != 2 || !strings.Contains(out, hint) {
		t.Errorf("remove-key with a newline from stdin: exit %d, %q; want exit 2 and the newline hint", code, out)
	}
	// No hint for a wrong key without a newline, nor from a file.
	if out, code := cryptctlIn(strings.NewReader("wrong"), "luks", "test-key", img, "--key-file", "-"); code != 2 || strings.Contains(out, hint) {
		t.Errorf("wrong key without newline: exit %d, %q", code, out)
	}
	if out, code := cryptctlIn(nil, "luks", "test-key", img, "--key-file", luks2test.KeyFile(t, []byte("secret\n"))); code != 2 || strings.Contains(out, hint) {
		t.Errorf("wrong key from a file: exit %d, %q", code, out)
	}
	if out, code := cryptctlIn(strings.NewReader("secret"), "luks", "test-key", img, "--key-file", "-"); code != 0 {
		t.Errorf("exact key from a pipe: exit %d, %q", code, out)
	}
}

// TestPassphraseOnPTY types a passphrase and Enter on a real pseudo
// terminal: it must not be echoed and the newline must not be in the key.
func TestPassphraseOnPTY(t *testing.T) {
	master, slave := openTestPTY(t)
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// type waits for prompt on the screen and echo off, then types line.
	typ := func(prompt, line string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			shown := strings.Contains(screen.String(), prompt)
			mu.Unlock()
			tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if shown && tio.Lflag&unix.ECHO == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no prompt %q with echo off; screen %q", prompt, screen.String())
			}
		}
		if _, err := master.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	img := luks2test.NewImage(t, 16<<20)
	done := make(chan int)
	go func() {
		done <- run(append([]string{"luks", "format", img, "--key-file", "-"}, cheapKDF...), slave, io.Discard, slave)
	}()
	typ("Enter new passphrase for "+img+":", "hunter22\r")
	typ("Verify passphrase:", "hunter22\r")
	if code := <-done; code != 0 {
		t.Fatalf("format on a terminal: exit %d; screen %q", code, screen.String())
	}
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	shown := screen.String()
	mu.Unlock()
	if strings.Contains(shown, "hunter22") {
		t.Errorf("the passphrase was echoed: %q", shown)
	}
	if out, code := cryptctlIn(nil, "luks", "test-key", img, "--key-file", luks2test.KeyFile(t, []byte("hunter22"))); code != 0 {
		t.Fatalf("the passphrase typed on the terminal does not open the image: exit %d: %s", code, out)
	}
}

// openTestPTY opens a pseudo-terminal pair (posix_openpt, unlockpt, ptsname).
func openTestPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}
