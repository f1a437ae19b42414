package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// terminal is stdin seen as the operator's terminal: passphrases typed on
// it are read without echo, up to (and without) the Enter newline. Tests
// give a fake one as the command's stdin.
type terminal interface {
	IsTerminal() bool
	ReadPassword() ([]byte, error)
}

// fileTerminal is a terminal backed by an open file, normally os.Stdin.
type fileTerminal struct{ f *os.File }

func (t fileTerminal) IsTerminal() bool              { return term.IsTerminal(int(t.f.Fd())) }
func (t fileTerminal) ReadPassword() ([]byte, error) { return term.ReadPassword(int(t.f.Fd())) }

// stdinTerminal returns the command's stdin as a terminal, or nil when it
// is a file, a pipe or anything else that is not one.
func stdinTerminal(cmd *cobra.Command) terminal {
	var t terminal
	switch in := cmd.InOrStdin().(type) {
	case terminal:
		t = in
	case *os.File:
		t = fileTerminal{in}
	default:
		return nil
	}
	if !t.IsTerminal() {
		return nil
	}
	return t
}

// readPassphrase reads a passphrase for the device or volume named what.
// From a file or a pipe it is readKeyFile: the bytes exactly as they are.
// When path is "-" and stdin is a terminal it does what cryptsetup does:
// prompts on stderr, reads without echo, drops the Enter newline and, for
// a new passphrase (verify), asks a second time and refuses a mismatch.
func readPassphrase(cmd *cobra.Command, flag, path, what string, verify bool) ([]byte, error) {
	tty := stdinTerminal(cmd)
	if path != "-" || tty == nil {
		return readKeyFile(cmd, flag, path)
	}
	prompt := "Enter passphrase for " + what + ": "
	if verify {
		prompt = "Enter new passphrase for " + what + ": "
	}
	pass, err := promptPassword(cmd, tty, prompt)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	if len(pass) == 0 {
		return nil, fmt.Errorf("--%s: empty passphrase", flag)
	}
	if verify {
		again, err := promptPassword(cmd, tty, "Verify passphrase: ")
		if err != nil {
			clear(pass)
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
		same := bytes.Equal(pass, again)
		clear(again)
		if !same {
			clear(pass)
			return nil, fmt.Errorf("--%s: passphrases do not match; nothing was changed", flag)
		}
	}
	return pass, nil
}

// promptPassword writes prompt to stderr and reads one line without echo.
func promptPassword(cmd *cobra.Command, tty terminal, prompt string) ([]byte, error) {
	fmt.Fprint(cmd.ErrOrStderr(), prompt)
	pass, err := tty.ReadPassword()
	fmt.Fprintln(cmd.ErrOrStderr()) // the Enter was not echoed
	if err != nil {
		return nil, fmt.Errorf("read passphrase from terminal: %w", err)
	}
	return pass, nil
}

// stdinNewlineHint adds to a "no key slot opens" error a note when the key
// came from a non-terminal stdin and ends with a newline, the usual result
// of echo or a here-string. Other errors are returned as they are.
func stdinNewlineHint(cmd *cobra.Command, err error, path string, pass []byte) error {
	if err == nil || !errors.Is(err, luks2.ErrNoKeyslotOpens) || path != "-" ||
		!bytes.HasSuffix(pass, []byte("\n")) || stdinTerminal(cmd) != nil {
		return err
	}
	return fmt.Errorf("%w (the key read from stdin ends with a newline; cryptsetup keeps it too: use printf '%%s' or --key-file FILE without it)", err)
}

// readKeyFile reads a key (passphrase, volume key, signing key) as raw
// bytes from the file named by --flag, or from stdin when it is "-". Keys
// are never taken from the command line, so the flag is required; the
// caller zeroes the key after use.
func readKeyFile(cmd *cobra.Command, flag, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("--%s is required (keys are never taken from the command line)", flag)
	}
	b, err := readFileOrStdin(cmd, path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("--%s %s: empty key", flag, path)
	}
	return b, nil
}

// readFileOrStdin reads the file at path, or the command's stdin when path
// is "" or "-".
func readFileOrStdin(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "" || path == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(path)
}

// openDevice opens an image file or block device, read-write when write,
// and returns its size.
func openDevice(path string, write bool) (*os.File, int64, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices, unlike Stat
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: size: %w", path, err)
	}
	return f, size, nil
}
