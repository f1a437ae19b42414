// Command cryptctl is the operator's tool for cryptinit: LUKS2 headers, the
// META partition, machine configs, volumes on image files and PCR signing.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/internal/version"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line with the given streams and returns the
// process exit code; tests call it in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "cryptctl:", err)
		return exitCode(err)
	}
	return 0
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "cryptctl %s\n", version.Get())
			return err
		},
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "cryptctl",
		Short:         "Operate cryptinit volumes, META, machine configs and boot images",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.Long = `Operate cryptinit volumes, META, machine configs and boot images. The device
(partition or image file) is the positional argument of every command that takes
one; a key slot is --key-slot (-S).

Exit codes, the same in every command group:
  0  done
  1  an error (bad input, I/O, a refusal)
  2  no key (or no key slot) opens the volume
  3  the volume opened, but bringing its key slots in line had problems`
	addBatchFlag(root) // confirm.go
	// Each command group lives in its own file: luks.go, config.go, meta.go,
	// volume.go, pcr.go, image.go.
	root.AddCommand(
		newLuksCmd(),
		newConfigCmd(),
		newMetaCmd(),
		newVolumeCmd(),
		newPCRCmd(),
		newImageCmd(),
		newVersionCmd(),
		newManCmd(),
	)
	// after every AddCommand: these walk the tree
	addCompletions(root)
	addExamples(root)
	return root
}

// Exit codes, the same in every command group (README, Tools).
const (
	exitOK           = 0 // done
	exitFailure      = 1 // any error: bad input, I/O, refused, nothing changed unless said
	exitNoKey        = 2 // no key (or no key slot) opens the volume
	exitSyncProblems = 3 // the volume opened, but bringing its key slots in line had problems
)

// exitError carries a specific exit code through cobra; exitCode maps
// every other error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the one place errors become exit codes: an exitError says
// its code; an error that means no key opened the volume, from the LUKS2
// engine or the unlock engine, is exitNoKey; any other error is exitFailure.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if e := (*exitError)(nil); errors.As(err, &e) {
		return e.code
	}
	if errors.Is(err, luks2.ErrNoKeyslotOpens) || errors.Is(err, unlock.ErrNoKeyOpens) {
		return exitNoKey
	}
	return exitFailure
}
