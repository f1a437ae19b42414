package console

import (
	"bytes"
	"errors"
	"fmt"
	"os"
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
}

// Passphrase asks for the passphrase of volume. The caller must zero the
// returned bytes after use. The terminal's echo is restored on return.
func (p *Prompter) Passphrase(volume string, try, tries int) ([]byte, error) {
	return p.ask(fmt.Sprintf("Enter passphrase or recovery key for %s (try %d of %d, %s), then press Enter:", volume, try, tries, p.Timeout))
}

// TPMPIN asks for the TPM2 PIN of volume's systemd-tpm2 token (enrolled
// with systemd-cryptenroll --tpm2-with-pin), the same way as Passphrase.
func (p *Prompter) TPMPIN(volume string, try, tries int) ([]byte, error) {
	return p.ask(fmt.Sprintf("Enter TPM2 PIN for %s (try %d of %d, %s), then press Enter:", volume, try, tries, p.Timeout))
}

// ask shows question with echo off and reads one line.
func (p *Prompter) ask(question string) ([]byte, error) {
	if p.TTY == nil {
		return nil, ErrNoTerminal
	}
	var old *unix.Termios
	err := withFD(p.TTY, func(fd int) error {
		if !term.IsTerminal(fd) {
			return ErrNoTerminal
		}
		var err error
		if old, err = unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			return err
		}
		noEcho := *old
		noEcho.Lflag &^= unix.ECHO
		noEcho.Lflag |= unix.ICANON | unix.ISIG
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
			return err
		}
		// Drop anything typed before the question was asked.
		return unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH)
	})
	if errors.Is(err, ErrNoTerminal) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	defer withFD(p.TTY, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS, old) })

	// The question ends with a newline so that serial consoles and log
	// readers that work line by line see it before anything is typed.
	fmt.Fprintf(p.TTY, "%s%s\n", Prefix, question)
	return readLine(p.TTY, p.Timeout)
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

// readLine reads up to a newline, giving up after timeout (0: wait forever).
func readLine(f *os.File, timeout time.Duration) ([]byte, error) {
	if timeout > 0 {
		if err := f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, fmt.Errorf("prompt: console has no read deadline: %w", err)
		}
		defer f.SetReadDeadline(time.Time{})
	}
	var line []byte
	buf := make([]byte, 256)
	defer clear(buf)
	for {
		n, err := f.Read(buf)
		line = append(line, buf[:n]...)
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
