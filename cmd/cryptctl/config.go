package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/config"
)

// newConfigCmd works with machine configs (VolumeConfig, UserVolumeConfig).
func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with machine configs"}
	cmd.AddCommand(newConfigValidateCmd())
	return cmd
}

func newConfigValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check the volume documents of a machine config; exits non-zero on errors",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.ParseFile(args[0])
			out := cmd.OutOrStdout()
			if cfg != nil {
				for _, v := range cfg.Volumes {
					fmt.Fprintf(out, "%s (%s, document %d): %s\n", v.ID, v.Kind, v.Doc, configSummary(&v))
				}
				for _, w := range cfg.Warnings {
					fmt.Fprintf(out, "warning: %s\n", w)
				}
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(out, "%s: ok (%d volumes)\n", args[0], len(cfg.Volumes))
			return nil
		},
	}
}

// configSummary describes a volume without any secret.
func configSummary(v *config.Volume) string {
	if !v.Encrypted() {
		return "not encrypted"
	}
	ks := make([]string, len(v.Encryption.Keys))
	for i := range v.Encryption.Keys {
		ks[i] = v.Encryption.Keys[i].String()
	}
	s := "encrypted, keys: " + strings.Join(ks, ", ")
	if k := v.Encryption.KDF; k != nil {
		s += fmt.Sprintf("; kdf %s %d KiB x%d", k.Type, k.MemoryKiB, k.Iterations)
	}
	return s
}
