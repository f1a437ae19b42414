package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// batchFlag is the persistent -q/--batch flag: destructive commands do not
// ask for confirmation (as cryptsetup's -q/--batch-mode).
const batchFlag = "batch"

// addBatchFlag defines -q/--batch on the root command.
func addBatchFlag(root *cobra.Command) {
	root.PersistentFlags().BoolP(batchFlag, "q", false, "do not ask for confirmation of destructive operations")
}

// batchMode reports whether -q/--batch was given.
func batchMode(cmd *cobra.Command) bool {
	f := cmd.Flag(batchFlag)
	return f != nil && f.Value.String() == "true"
}

// errNotConfirmed is returned when the operator does not type YES.
var errNotConfirmed = errors.New("not confirmed: nothing was changed")

// confirm asks the operator to type YES (in capitals, as cryptsetup asks)
// before a destructive operation described by warning. With -q/--batch it
// returns nil without asking. Without a terminal on stdin it refuses: a
// script must say -q/--batch to mean it.
func confirm(cmd *cobra.Command, warning string) error {
	if batchMode(cmd) {
		return nil
	}
	tty := stdinTerminal(cmd)
	if tty == nil {
		return fmt.Errorf("%s; stdin is not a terminal to confirm on: add -q/--batch to go ahead without asking", warning)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "WARNING!\n========\n%s.\n\nAre you sure? (Type 'yes' in capital letters): ", warning)
	answer, err := readLine(cmd.InOrStdin())
	if err != nil && answer == "" {
		return fmt.Errorf("read confirmation: %w", err)
	}
	if strings.TrimSpace(answer) != "YES" {
		return errNotConfirmed
	}
	return nil
}

// readLine reads one line, byte by byte so that nothing after it is
// consumed, and returns it without its newline.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return strings.TrimSuffix(b.String(), "\r"), nil
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
}
