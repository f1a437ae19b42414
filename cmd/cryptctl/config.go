package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock"
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
					if slices.Contains(cfg.UnknownKinds, w) {
						continue // an error below
					}
					fmt.Fprintf(out, "warning: %s\n", w)
				}
			}
			if cfg != nil {
				for _, n := range cfg.Notes {
					fmt.Fprintf(out, "note: %s\n", n)
				}
			}
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			// the boot skips these with a log line; an operator checking a
			// file wants to hear that it does nothing
			var errs []string
			for _, p := range cfg.UnknownKinds {
				errs = append(errs, p.String())
			}
			if len(cfg.Volumes) == 0 {
				errs = append(errs, "no volume config: cryptinit would do nothing with this file; fix: add a document with kind: VolumeConfig (name: STATE or EPHEMERAL) or kind: UserVolumeConfig")
			}
			if len(errs) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%s: %s", args[0], strings.Join(errs, "\n  "))}
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
	// the KDF new key slots really get, defaults filled in
	k := unlock.KDFFor(v.Encryption)
	if k.Type == "pbkdf2" {
		return s + fmt.Sprintf("; kdf pbkdf2-%s %d iterations", k.Hash, k.Iterations)
	}
	return s + fmt.Sprintf("; kdf %s %d KiB, %d passes, %d threads", k.Type, k.Memory, k.Time, k.Parallel)
}
