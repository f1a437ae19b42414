package main

import "github.com/spf13/cobra"

// newLuksCmd is filled in by the package that owns LUKS2.
func newLuksCmd() *cobra.Command {
	return &cobra.Command{Use: "luks", Short: "Work with LUKS2"}
}
