package main

import "github.com/spf13/cobra"

// newPCRCmd is filled in by the package that owns PCR 11 prediction and UKI policy signing.
func newPCRCmd() *cobra.Command {
	return &cobra.Command{Use: "pcr", Short: "Work with PCR 11 prediction and UKI policy signing"}
}
