package main

import "github.com/spf13/cobra"

// newMetaCmd is filled in by the package that owns the META partition.
func newMetaCmd() *cobra.Command {
	return &cobra.Command{Use: "meta", Short: "Work with the META partition"}
}
