package main

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// addCompletions teaches shell completion the values cryptctl knows, on
// every command with the flag, by flag name: --volume (volume IDs, with
// the u-<name> volumes of --config when given), --pbkdf (KDF names), --tag
// (META tags) and --config (YAML files).
func addCompletions(root *cobra.Command) {
	walkCommands(root, func(c *cobra.Command) {
		for name, fn := range map[string]cobra.CompletionFunc{
			"volume": completeVolumeIDs,
			"pbkdf":  cobra.FixedCompletions([]cobra.Completion{"argon2id", "argon2i", "pbkdf2"}, cobra.ShellCompDirectiveNoFileComp),
			"tag":    completeMetaTags,
			"config": func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
			},
		} {
			if c.Flags().Lookup(name) != nil {
				c.RegisterFlagCompletionFunc(name, fn)
			}
		}
	})
}

// completeVolumeIDs suggests STATE, EPHEMERAL and, when the command has a
// --config naming a readable machine config, every volume it configures.
func completeVolumeIDs(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ids := []string{config.StateVolume, config.EphemeralVolume}
	if f := cmd.Flags().Lookup("config"); f != nil && f.Value.String() != "" {
		// a config with errors still names its volumes
		if cfg, _ := config.ParseFile(f.Value.String()); cfg != nil {
			for _, v := range cfg.Volumes {
				if !slices.Contains(ids, v.ID) {
					ids = append(ids, v.ID)
				}
			}
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// completeMetaTags suggests the META tags with a name, with it.
func completeMetaTags(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var out []cobra.Completion
	for t := uint32(1); t <= 0xff; t++ {
		if name := meta.TagName(t); name != "" {
			out = append(out, cobra.CompletionWithDesc(fmt.Sprint(t), name))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
