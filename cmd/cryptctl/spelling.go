package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// One spelling: a key slot is --key-slot (-S) and the device is the first
// positional argument in every command group. The spellings of the release
// before stay for one release as hidden aliases that print a one-line note.

// keySlotFlag registers --key-slot/-S on cmd and the hidden, deprecated
// --slot alias for it.
func keySlotFlag(cmd *cobra.Command, slot *int, def int, usage string) {
	cmd.Flags().IntVarP(slot, "key-slot", "S", def, usage)
	deprecatedAlias(cmd, "slot", "key-slot")
}

// keySlotChanged tells whether the key slot was given, in either spelling.
func keySlotChanged(cmd *cobra.Command) bool {
	return cmd.Flags().Changed("key-slot") || cmd.Flags().Changed("slot")
}

// deprecatedAlias adds the hidden flag --old that sets the same value as
// --name and, when used, prints a one-line note on stderr.
func deprecatedAlias(cmd *cobra.Command, old, name string) {
	f := cmd.Flags().Lookup(name)
	cmd.Flags().AddFlag(&pflag.Flag{
		Name:        old,
		Usage:       "deprecated spelling of --" + name,
		Value:       &aliasValue{Value: f.Value, cmd: cmd, note: fmt.Sprintf("--%s is deprecated and goes in the next release: use --%s", old, name)},
		DefValue:    f.DefValue,
		NoOptDefVal: f.NoOptDefVal,
		Hidden:      true,
	})
}

// aliasValue is the Value of a deprecated alias: the new flag's own Value,
// with a note on the command's stderr each time it is set.
type aliasValue struct {
	pflag.Value
	cmd  *cobra.Command
	note string
}

func (v *aliasValue) Set(s string) error {
	fmt.Fprintf(v.cmd.ErrOrStderr(), "cryptctl: note: %s\n", v.note)
	return v.Value.Set(s)
}

// deviceFlag registers the hidden, deprecated --device flag, the spelling
// before the device became the positional argument.
func deviceFlag(cmd *cobra.Command, device *string) {
	cmd.Flags().StringVar(device, "device", "", "deprecated: name the device as the argument")
	f := cmd.Flags().Lookup("device")
	f.Hidden = true
	f.Value = &aliasValue{Value: f.Value, cmd: cmd, note: "--device is deprecated and goes in the next release: name the device as the argument"}
}

// deviceArg returns the device named by the positional argument or, in the
// old spelling, by --device (*flagValue); naming two different ones is an
// error.
func deviceArg(cmd *cobra.Command, args []string, flagValue string) (string, error) {
	switch {
	case len(args) == 0 && flagValue == "":
		return "", fmt.Errorf("%s: name the device (partition or image file) as the argument: %s", cmd.CommandPath(), cmd.UseLine())
	case len(args) == 0:
		return flagValue, nil
	case flagValue != "" && flagValue != args[0]:
		return "", fmt.Errorf("%s: two devices named: %s and --device %s; give it once, as the argument", cmd.CommandPath(), args[0], flagValue)
	}
	return args[0], nil
}
