package main

import "github.com/spf13/cobra"

// newConfigCmd is filled in by the package that owns machine configs.
func newConfigCmd() *cobra.Command {
	return &cobra.Command{Use: "config", Short: "Work with machine configs"}
}
