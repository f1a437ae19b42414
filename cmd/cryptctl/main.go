// Command cryptctl is the operator's tool for cryptinit: LUKS2 headers, the
// META partition, machine configs, volumes on image files and PCR signing.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
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

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "cryptctl",
		Short:         "Operate cryptinit volumes, META, machine configs and boot images",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each command group lives in its own file: luks.go, config.go, meta.go,
	// volume.go, pcr.go, image.go.
	root.AddCommand(
		newLuksCmd(),
		newConfigCmd(),
		newMetaCmd(),
		newVolumeCmd(),
		newPCRCmd(),
		newImageCmd(),
	)
	return root
}

// exitError carries a specific process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e := (*exitError)(nil); errors.As(err, &e) {
		return e.code
	}
	return 1
}
