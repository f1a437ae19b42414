package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// newMetaCmd works with the META partition (or a 1 MiB image of it).
func newMetaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "meta", Short: "Work with the META partition"}
	cmd.AddCommand(newMetaListCmd(), newMetaGetCmd(), newMetaSetCmd(), newMetaDeleteCmd(), newMetaWipeCmd(), newMetaCancelWipeCmd())
	return cmd
}

// metaOpen opens an existing META device or image; it never creates one,
// so a mistyped path is an error, not a new file. An empty regular file
// opened for writing is grown to a META's size (truncate -s 1M or touch
// makes a new image).
func metaOpen(path string, write bool) (*os.File, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (cryptctl never creates a META: check the path, or make a new image with truncate -s 1M %s)", err, path)
	}
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() == 0 && write {
		if err := f.Truncate(meta.Size); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// metaRead reads the META at path; a blank one is empty.
func metaRead(path string) (*meta.Meta, error) {
	f, err := metaOpen(path, false)
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
	cmd.Flags().Uint32Var(tag, "tag", 0, "META tag number (9 = STATE encryption config, 15 = UUID override, 12-14 = Talos users' own, 193 = cryptinit wipe request, 194 = cryptinit format journal)")
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
				num := fmt.Sprint(t)
				if t >= 0x80 || meta.TagName(t) == "" {
					num = fmt.Sprintf("%d/%#x", t, t)
				}
				fmt.Fprintf(out, "%-9s %-28s %6d bytes\n", num, name, len(v))
			}
			reqs, err := meta.WipeRequests(m)
			if err != nil {
				fmt.Fprintf(out, "note: %v; the boot acts on none of it\n", err)
			}
			for _, r := range reqs {
				fmt.Fprintf(out, "wipe request: %s at %s\n", r.Volume, r.Target())
			}
			for _, w := range meta.LegacyWarnings(m) {
				fmt.Fprintf(out, "note: %s\n", w)
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
				return fmt.Errorf("tag %d is not set in %s", tag, args[0])
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
		Short: "Set a tag (both copies are rewritten); a blank or empty image is initialised, tag 9 must be a valid STATE encryption config",
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
			if tag > 0xff {
				return fmt.Errorf("tag %d is above 255: Talos reads a tag as one byte and would take it for its tag %d", tag, tag&0xff)
			}
			if tag == meta.TagStateEncryptionConfig {
				if err := metaCheckStateConfig(v); err != nil {
					return fmt.Errorf("meta set tag %d on %s: %w; nothing was written", tag, args[0], err)
				}
			}
			return metaUpdate(args[0], func(m *meta.Meta) (bool, error) {
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

// metaCheckStateConfig checks a tag 9 value the way the boot reads it: JSON
// (and nothing after it) holding a STATE encryption config that passes the
// machine-config rules. A value the boot cannot use would leave STATE
// unopenable from META.
func metaCheckStateConfig(v []byte) error {
	if !json.Valid(v) {
		var x any
		err := json.Unmarshal(v, &x)
		return fmt.Errorf("the value is not valid JSON (%v): tag 9 holds STATE's encryption config as JSON, e.g. from cryptctl meta get --tag 9", err)
	}
	if _, err := meta.DecodeStateConfig(v); err != nil {
		return err
	}
	return nil
}

func newMetaDeleteCmd() *cobra.Command {
	var tag uint32
	cmd := &cobra.Command{
		Use:   "delete --tag N DEVICE",
		Short: "Delete a tag",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(args[0], func(m *meta.Meta) (bool, error) {
				if !m.Delete(tag) {
					return false, fmt.Errorf("tag %d is not set in %s", tag, args[0])
				}
				return true, nil
			})
		},
	}
	metaTagFlag(cmd, &tag)
	return cmd
}

func newMetaWipeCmd() *cobra.Command {
	var (
		req       meta.WipeRequest
		partition string
		disk      string
		yes       bool
	)
	cmd := &cobra.Command{
		Use:   "request-wipe --volume ID [--partuuid GUID | --luks-uuid UUID | --partition DEV] [--disk DISK] [--yes] META-DEVICE",
		Short: "Ask the next boot to wipe a volume's partition (e.g. EPHEMERAL, to encrypt it); the request names the partition",
		Long: `Ask the next boot to wipe a volume's partition, so that it is formatted
(encrypted) again. The request (META tag 0xC1) names the partition it targets
by GPT partition GUID (PARTUUID) and/or the UUID of the LUKS header on it; the
boot wipes only a partition that matches, and leaves a request that does not
match in META with a warning on every boot (cancel it with cancel-wipe).

Only a volume that exists is accepted: the GPT of the disk holding META (when
META-DEVICE is a partition) or of --disk DISK (a disk or a whole-disk image)
must have exactly one partition labelled ID, with the GUID of --partuuid and
the LUKS UUID of --luks-uuid (or of the header on --partition DEV) when those
are given. The command prints what the wipe destroys (partition, label, size,
LUKS UUID) and how to cancel it. STATE holds the salt of every volume with a
lockToSTATE key: wiping it loses those volumes too, so STATE needs --yes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := metaOpen(args[0], false) // before anything else: a mistyped path
			if err != nil {
				return err
			}
			f.Close()
			if !meta.IsVolumeID(req.Volume) {
				err := (meta.WipeRequest{Volume: req.Volume}).Validate()
				if meta.SuggestVolumeID(req.Volume) == "" && disk != "" {
					// a user volume named without its u- prefix
					if labels, lerr := gptLabels(disk); lerr == nil {
						err = fmt.Errorf("%w%s", err, labelHint(req.Volume, labels))
					}
				}
				return err
			}
			for _, id := range []struct{ flag, v string }{{"--partuuid", req.PartUUID}, {"--luks-uuid", req.LUKSUUID}} {
				if id.v != "" && !isUUID(id.v) {
					return fmt.Errorf("%s %q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", id.flag, id.v)
				}
			}
			if partition != "" {
				u, err := readLUKSUUID(partition)
				if err != nil {
					return fmt.Errorf("--partition: %w (a partition without a LUKS header is named by --partuuid or --disk)", err)
				}
				if req.LUKSUUID != "" && !strings.EqualFold(req.LUKSUUID, u) {
					return fmt.Errorf("--luks-uuid %s, but %s holds LUKS UUID %s", req.LUKSUUID, partition, u)
				}
				req.LUKSUUID = u
			}
			if disk == "" {
				d, err := diskOfPartition(args[0])
				if err != nil {
					return fmt.Errorf("name the partition to wipe on its disk: give --disk DISK (the disk or whole-disk image holding %s), whose GPT is checked for it (%v)", req.Volume, err)
				}
				disk = d
			}
			t, err := findWipeTarget(disk, req.Volume, req.PartUUID, req.LUKSUUID)
			if err != nil {
				return err
			}
			req.PartUUID = t.entry.PartUUID
			out := cmd.OutOrStdout()
			if req.Volume == "STATE" {
				lost := "EPHEMERAL and user volumes"
				if c := t.lockedCandidates(); len(c) > 0 {
					lost = strings.Join(c, ", ") + " on this disk"
				}
				warn := fmt.Sprintf("wiping STATE destroys %s and, with it, STATE's lockToSTATE salt (%s): every volume with a lockToSTATE key (%s, if so configured) can never be opened again", t.describe(req.Volume), keys.SaltFile, lost)
				if !yes {
					return fmt.Errorf("%s; add --yes if that is what you want (nothing was written)", warn)
				}
				fmt.Fprintf(out, "warning: %s\n", warn)
			}
			return metaUpdate(args[0], func(m *meta.Meta) (bool, error) {
				if err := meta.RequestWipe(m, req); err != nil {
					return false, err
				}
				reqs, _ := meta.WipeRequests(m)
				fmt.Fprintf(out, "the next boot wipes %s if its partition has %s\n", req.Volume, reqs[len(reqs)-1].Target())
				fmt.Fprintf(out, "  it destroys: %s\n", t.describe(req.Volume))
				fmt.Fprintf(out, "  to cancel before then: cryptctl meta cancel-wipe --volume %s %s\n", req.Volume, args[0])
				return true, nil
			})
		},
	}
	cmd.Flags().StringVar(&req.Volume, "volume", "", "volume ID to wipe (EPHEMERAL, u-<name>, STATE)")
	cmd.Flags().StringVar(&req.PartUUID, "partuuid", "", "GPT partition GUID of the partition to wipe")
	cmd.Flags().StringVar(&req.LUKSUUID, "luks-uuid", "", "UUID of the LUKS header on the partition to wipe")
	cmd.Flags().StringVar(&partition, "partition", "", "read the LUKS UUID from this partition (or image)")
	cmd.Flags().StringVar(&disk, "disk", "", "the disk (or whole-disk image) holding the volume: its GPT is checked for the partition labelled --volume (default: the disk holding META-DEVICE)")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm a wipe of STATE (it loses every lockToSTATE volume's salt)")
	cmd.MarkFlagRequired("volume")
	return cmd
}

func newMetaCancelWipeCmd() *cobra.Command {
	var volume string
	cmd := &cobra.Command{
		Use:   "cancel-wipe --volume ID META-DEVICE",
		Short: "Withdraw the wipe request for a volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(args[0], func(m *meta.Meta) (bool, error) {
				ok, err := meta.CancelWipe(m, volume)
				if err != nil {
					return false, err
				}
				if !ok {
					hint := ""
					if g := meta.SuggestVolumeID(volume); g != "" {
						hint = "; did you mean " + g + "?"
					}
					return false, fmt.Errorf("no wipe request for %s in %s%s", volume, args[0], hint)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wipe request for %s withdrawn\n", volume)
				return true, nil
			})
		},
	}
	cmd.Flags().StringVar(&volume, "volume", "", "volume ID")
	cmd.MarkFlagRequired("volume")
	return cmd
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func isUUID(s string) bool { return uuidRE.MatchString(s) }

// readLUKSUUID reads the UUID of the LUKS header on path.
func readLUKSUUID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, err := luks2.ReadHeader(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return h.UUID, nil
}

// diskOfPartition returns the disk (/dev/<name>) that holds the partition
// block device path, through sysfs.
func diskOfPartition(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("%s is not a block device", path)
	}
	return diskOfDev("/sys", "/dev", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

// diskOfDev names the disk holding partition major:minor: sysfs links
// dev/block/M:m to .../block/<disk>/<partition>, which has a "partition"
// file.
func diskOfDev(sys, dev string, major, minor uint32) (string, error) {
	p := filepath.Join(sys, "dev/block", fmt.Sprintf("%d:%d", major, minor))
	if _, err := os.Stat(filepath.Join(p, "partition")); err != nil {
		return "", fmt.Errorf("device %d:%d is not a partition", major, minor)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	return filepath.Join(dev, filepath.Base(filepath.Dir(real))), nil
}

// metaUpdate reads META, applies change and writes both copies back.
func metaUpdate(path string, change func(*meta.Meta) (bool, error)) error {
	f, err := metaOpen(path, true)
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
