package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/meta"
)

// newMetaCmd works with the META partition (or a 1 MiB image of it).
func newMetaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "meta", Short: "Work with the META partition"}
	cmd.AddCommand(newMetaListCmd(), newMetaGetCmd(), newMetaSetCmd(), newMetaDeleteCmd(), newMetaWipeCmd())
	return cmd
}

// metaOpen opens a META device; create makes a missing image file.
func metaOpen(path string, write, create bool) (*os.File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
		if create {
			flag |= os.O_CREATE
		}
	}
	f, err := os.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() == 0 && write && create {
		if err := f.Truncate(meta.Size); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// metaRead reads the META at path; a blank one is empty.
func metaRead(path string) (*meta.Meta, error) {
	f, err := metaOpen(path, false, false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return metaLoad(f, true)
}

// metaLoad reads META; a blank one is empty when allowBlank.
func metaLoad(f *os.File, allowBlank bool) (*meta.Meta, error) {
	m, err := meta.Read(f)
	if errors.Is(err, meta.ErrBlank) && allowBlank {
		return meta.New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return m, nil
}

func metaTagFlag(cmd *cobra.Command, tag *uint32) {
	cmd.Flags().Uint32Var(tag, "tag", 0, "META tag number (9 = STATE encryption config, 12 = cryptinit wipe request, 15 = UUID override)")
	cmd.MarkFlagRequired("tag")
}

func newMetaListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list DEVICE",
		Short: "List the tags set in META (sizes only: values may hold secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := metaRead(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if m.Copy == 2 {
				fmt.Fprintf(out, "note: copy 1 is damaged (%v); read copy 2\n", m.FirstCopyErr)
			}
			for _, t := range m.Tags() {
				v, _ := m.Get(t)
				name := meta.TagName(t)
				if name == "" {
					name = "-"
				}
				fmt.Fprintf(out, "%3d  %-28s %6d bytes\n", t, name, len(v))
			}
			return nil
		},
	}
}

func newMetaGetCmd() *cobra.Command {
	var tag uint32
	cmd := &cobra.Command{
		Use:   "get --tag N DEVICE",
		Short: "Print a tag's value as stored (raw bytes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := metaRead(args[0])
			if err != nil {
				return err
			}
			v, ok := m.Get(tag)
			if !ok {
				return &exitError{code: 2, err: fmt.Errorf("tag %d is not set in %s", tag, args[0])}
			}
			out := cmd.OutOrStdout()
			out.Write(v)
			if utf8.Valid(v) && len(v) > 0 && v[len(v)-1] != '\n' && metaIsTerminal(out) {
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	metaTagFlag(cmd, &tag)
	return cmd
}

func metaIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newMetaSetCmd() *cobra.Command {
	var (
		tag   uint32
		value string
		file  string
	)
	cmd := &cobra.Command{
		Use:   "set --tag N (--value S | --file F | stdin) DEVICE",
		Short: "Set a tag (both copies are rewritten); a blank or missing image is initialised",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v []byte
			switch {
			case cmd.Flags().Changed("value") && file != "":
				return errors.New("give --value or --file, not both")
			case cmd.Flags().Changed("value"):
				v = []byte(value)
			default:
				var err error
				if v, err = readFileOrStdin(cmd, file); err != nil {
					return fmt.Errorf("meta set tag %d: %w", tag, err)
				}
			}
			if tag == 0 {
				return errors.New("tag 0 is reserved (it ends the tag list)")
			}
			return metaUpdate(args[0], true, func(m *meta.Meta) (bool, error) {
				m.Set(tag, v)
				return true, nil
			})
		},
	}
	metaTagFlag(cmd, &tag)
	cmd.Flags().StringVar(&value, "value", "", "the value")
	cmd.Flags().StringVar(&file, "file", "", "read the value from this file")
	return cmd
}

func newMetaDeleteCmd() *cobra.Command {
	var tag uint32
	cmd := &cobra.Command{
		Use:   "delete --tag N DEVICE",
		Short: "Delete a tag",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(args[0], false, func(m *meta.Meta) (bool, error) {
				if !m.Delete(tag) {
					return false, &exitError{code: 2, err: fmt.Errorf("tag %d is not set in %s", tag, args[0])}
				}
				return true, nil
			})
		},
	}
	metaTagFlag(cmd, &tag)
	return cmd
}

func newMetaWipeCmd() *cobra.Command {
	var volume string
	cmd := &cobra.Command{
		Use:   "request-wipe --volume ID DEVICE",
		Short: "Ask the next boot to wipe a volume (e.g. EPHEMERAL) so that it is encrypted (migration to encryption)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(args[0], true, func(m *meta.Meta) (bool, error) {
				meta.RequestWipe(m, volume)
				fmt.Fprintf(cmd.OutOrStdout(), "the next boot wipes %s (pending: %v)\n", volume, meta.WipeRequests(m))
				return true, nil
			})
		},
	}
	cmd.Flags().StringVar(&volume, "volume", "", "volume ID to wipe (EPHEMERAL, u-<name>)")
	cmd.MarkFlagRequired("volume")
	return cmd
}

// metaUpdate reads META, applies change and writes both copies back.
func metaUpdate(path string, create bool, change func(*meta.Meta) (bool, error)) error {
	f, err := metaOpen(path, true, create)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := metaLoad(f, true)
	if err != nil {
		return fmt.Errorf("%w (not rewriting a META that cannot be read)", err)
	}
	changed, err := change(m)
	if err != nil || !changed {
		return err
	}
	if err := m.Write(f); err != nil {
		return err
	}
	return f.Close()
}
