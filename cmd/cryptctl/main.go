// Command cryptctl is the operator's tool for cryptinit: LUKS2 headers, the
// META partition, machine configs, volumes on image files and PCR signing.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cryptctl:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "cryptctl",
		Short:         "Operate cryptinit volumes, META, machine configs and boot images",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Each command group lives in its own file: luks.go, config.go, meta.go,
	// volume.go, pcr.go.
	root.AddCommand(
		newLuksCmd(),
		newConfigCmd(),
		newMetaCmd(),
		newVolumeCmd(),
		newPCRCmd(),
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
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
