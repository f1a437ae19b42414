package console

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ErrPromptTimeout is returned when nobody typed a passphrase in time.
var ErrPromptTimeout = errors.New("no passphrase typed before the timeout")

// ErrNoTerminal is returned when the console is not a terminal, so nobody can
// be asked.
var ErrNoTerminal = errors.New("console is not a terminal")

// Prompter asks on a terminal for a passphrase without echoing it.
type Prompter struct {
	TTY     *os.File      // the console, opened read-write
	Timeout time.Duration // per try
	// Others are more terminals that show the question and may answer it:
	// the VT a USB or PS/2 keyboard types into when the console is a serial
	// line. The first line typed on any terminal is the answer.
	Others []*os.File
}

// Passphrase asks for the passphrase of volume on every terminal. The
// caller must zero the returned bytes after use. The terminals' echo is
// restored on return. ErrNoTerminal only when none of them is a terminal.
func (p *Prompter) Passphrase(volume string, try, tries int) ([]byte, error) {
	return p.ask(fmt.Sprintf("Enter passphrase or recovery key for %s (try %d of %d, %s), then press Enter:", volume, try, tries, p.Timeout))
}

// TPMPIN asks for the TPM2 PIN of volume's systemd-tpm2 token (enrolled
// with systemd-cryptenroll --tpm2-with-pin), the same way as Passphrase.
func (p *Prompter) TPMPIN(volume string, try, tries int) ([]byte, error) {
	return p.ask(fmt.Sprintf("Enter TPM2 PIN for %s (try %d of %d, %s), then press Enter:", volume, try, tries, p.Timeout))
}

// ask shows question on every terminal with echo off and returns the first
// line typed on any of them. An extra terminal (Others) that cannot be set
// up is left out; the console (TTY) failing is an error.
func (p *Prompter) ask(question string) ([]byte, error) {
	var ttys []*os.File
	for i, f := range append([]*os.File{p.TTY}, p.Others...) {
		if f == nil {
			continue
		}
		restore, err := noEcho(f)
		if errors.Is(err, ErrNoTerminal) || (err != nil && i > 0) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("prompt: %w", err)
		}
		defer restore()
		ttys = append(ttys, f)
	}
	if len(ttys) == 0 {
		return nil, ErrNoTerminal
	}
	// The question ends with a newline so that serial consoles and log
	// readers that work line by line see it before anything is typed.
	line := []byte(Prefix + question + "\n")
	if len(ttys) == 1 {
		return readLine(ttys[0], line, p.Timeout)
	}
	return firstLine(ttys, line, p.Timeout)
}

// noEcho turns f's echo off (keeping line editing and signals) and drops
// anything typed before the question; restore puts the old mode back and
// drops what was typed but not read (half a passphrase typed here while
// another terminal answered), so the next reader (a debug shell, a getty)
// never gets it.
func noEcho(f *os.File) (restore func() error, err error) {
	var old *unix.Termios
	err = withFD(f, func(fd int) error {
		if !term.IsTerminal(fd) {
			return ErrNoTerminal
		}
		var err error
		if old, err = unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			return err
		}
		quiet := *old
		quiet.Lflag &^= unix.ECHO
		quiet.Lflag |= unix.ICANON | unix.ISIG
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
			return err
		}
		// Drop anything typed before the question was asked.
		return unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH)
	})
	if err != nil {
		return nil, err
	}
	return func() error {
		return withFD(f, func(fd int) error {
			flushErr := unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH)
			return errors.Join(unix.IoctlSetTermios(fd, unix.TCSETS, old), flushErr)
		})
	}, nil
}

// showTimeout bounds how long a terminal may take to show the question
// before the others start reading: a terminal whose output is stopped
// (Scroll Lock, XOFF) is left out after it.
const showTimeout = 2 * time.Second

// firstLine shows question on every terminal, then reads a line from each
// at once; it returns the first one completed. The question goes to every
// terminal before any read starts, so every terminal shows it even when
// another answers at once; a terminal that cannot show it within
// showTimeout (or timeout, if shorter) is left out. The other reads are
// stopped (their partial input zeroed) before it returns, so nothing
// touches a terminal after the prompt ends. When no line comes, the
// timeout wins over other errors.
func firstLine(ttys []*os.File, question []byte, timeout time.Duration) ([]byte, error) {
	type result struct {
		line []byte
		err  error
	}
	// Deadlines are set before any write or read starts, so stopping them
	// below cannot be undone by one that starts late.
	for _, f := range ttys {
		if err := setDeadline(f, timeout); err != nil {
			return nil, err
		}
		defer f.SetDeadline(time.Time{})
	}
	showBy := time.Now().Add(showTimeout)
	if timeout > 0 && timeout < showTimeout {
		showBy = time.Now().Add(timeout)
	}
	shown := make([]error, len(ttys))
	var wg sync.WaitGroup
	for i, f := range ttys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.SetWriteDeadline(showBy); err != nil {
				shown[i] = fmt.Errorf("prompt: %s has no deadline: %w", f.Name(), err)
				return
			}
			shown[i] = show(f, question)
		}()
	}
	wg.Wait()
	var live []*os.File
	var firstErr error
	for i, f := range ttys {
		if shown[i] == nil {
			live = append(live, f)
		} else if firstErr == nil {
			firstErr = shown[i]
		}
	}
	if len(live) == 0 {
		return nil, firstErr
	}
	results := make(chan result, len(live))
	for _, f := range live {
		go func() {
			line, err := readUntilNewline(f)
			results <- result{line, err}
		}()
	}
	var won []byte
	firstErr = nil
	timedOut := false
	for range live {
		r := <-results
		switch {
		case r.err == nil && won == nil:
			won = r.line
			for _, f := range live {
				f.SetDeadline(time.Now()) // stop the other reads
			}
		case r.err == nil:
			clear(r.line) // a second answer after the first: drop it
		case errors.Is(r.err, ErrPromptTimeout):
			timedOut = true
		case firstErr == nil:
			firstErr = r.err
		}
	}
	switch {
	case won != nil:
		return won, nil
	case timedOut:
		return nil, ErrPromptTimeout
	default:
		return nil, firstErr
	}
}

// show writes question to f within f's write deadline.
func show(f *os.File, question []byte) error {
	if _, err := f.Write(question); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrPromptTimeout
		}
		return fmt.Errorf("prompt: %w", err)
	}
	return nil
}

// withFD runs fn on f's descriptor without f.Fd(), which would switch the
// file to blocking mode and so disable read deadlines.
func withFD(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// readLine shows question on f and reads up to a newline, giving up after
// timeout (0: wait forever), writing included: a terminal whose output is
// stopped (Scroll Lock, XOFF) cannot hold the boot.
func readLine(f *os.File, question []byte, timeout time.Duration) ([]byte, error) {
	if err := setDeadline(f, timeout); err != nil {
		return nil, err
	}
	defer f.SetDeadline(time.Time{})
	if err := show(f, question); err != nil {
		return nil, err
	}
	return readUntilNewline(f)
}

// setDeadline makes writes and reads of f give up after timeout (0: never).
func setDeadline(f *os.File, timeout time.Duration) error {
	if timeout <= 0 {
		return nil
	}
	if err := f.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("prompt: %s has no deadline: %w", f.Name(), err)
	}
	return nil
}

// readUntilNewline reads f up to a newline, within f's read deadline.
// appendClearing appends b to line; when line must grow, the old buffer is
// zeroed after the copy.
func appendClearing(line, b []byte) []byte {
	if len(line)+len(b) <= cap(line) {
		return append(line, b...)
	}
	grown := make([]byte, len(line), 2*(len(line)+len(b)))
	copy(grown, line)
	clear(line[:cap(line)])
	return append(grown, b...)
}

func readUntilNewline(f *os.File) ([]byte, error) {
	// A canonical-mode line is at most 4096 bytes (MAX_CANON), so line
	// never grows past its first allocation and no unzeroed copy of a
	// passphrase is left behind; a longer read (not a terminal) grows it
	// by hand and clears the old buffer.
	line := make([]byte, 0, 4096)
	buf := make([]byte, 256)
	defer clear(buf)
	for {
		n, err := f.Read(buf)
		line = appendClearing(line, buf[:n])
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			rest := line[i:]
			out := bytes.TrimRight(line[:i], "\r")
			clear(rest)
			return out, nil
		}
		if err != nil {
			clear(line)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, ErrPromptTimeout
			}
			return nil, fmt.Errorf("prompt: %w", err)
		}
	}
}
