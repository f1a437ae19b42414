package main

import "github.com/spf13/cobra"

// newVolumeCmd is filled in by the package that owns volumes with the unlock engine.
func newVolumeCmd() *cobra.Command {
	return &cobra.Command{Use: "volume", Short: "Work with volumes with the unlock engine"}
}
