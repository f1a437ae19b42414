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

	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// newMetaCmd works with the META partition (or a 1 MiB image of it).
func newMetaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "meta", Short: "Work with the META partition"}
	v := hostDevView()
	cmd.AddCommand(newMetaListCmd(), newMetaGetCmd(), newMetaSetCmd(v), newMetaDeleteCmd(v), newMetaWipeCmd(v), newMetaCancelWipeCmd(v))
	return cmd
}

// metaOpen opens an existing META device or image; it never creates one,
// so a mistyped path is an error, not a new file.
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

// initFlag is --init: a blank (all-zero or empty) image file is not taken
// for a META unless the operator says to make one there.
func initFlag(cmd *cobra.Command, init *bool) {
	cmd.Flags().BoolVar(init, "init", false, "make a new META in a blank (all-zero or empty) image file; without it a blank image is refused (a partition must be labelled META instead)")
}

func newMetaSetCmd(dv devView) *cobra.Command {
	var (
		tag   uint32
		value string
		file  string
		init  bool
	)
	cmd := &cobra.Command{
		Use:   "set --tag N (--value S | --file F | stdin) DEVICE",
		Short: "Set a tag (both copies are rewritten); a blank or empty image needs --init, tag 9 must be a valid STATE encryption config",
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
			return metaUpdate(dv, args[0], init, func(m *meta.Meta) (bool, error) {
				m.Set(tag, v)
				return true, nil
			})
		},
	}
	metaTagFlag(cmd, &tag)
	initFlag(cmd, &init)
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

func newMetaDeleteCmd(dv devView) *cobra.Command {
	var tag uint32
	cmd := &cobra.Command{
		Use:   "delete --tag N DEVICE",
		Short: "Delete a tag",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(dv, args[0], false, func(m *meta.Meta) (bool, error) {
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

// wipeFlags are meta request-wipe's inputs.
type wipeFlags struct {
	req       meta.WipeRequest
	partition string // read the LUKS UUID from this partition or image
	disk      string // the disk whose GPT is checked ("" = the disk holding META)
	yes       bool   // confirm a wipe of STATE
	init      bool   // a blank META image may be made
}

func newMetaWipeCmd(dv devView) *cobra.Command {
	var f wipeFlags
	cmd := &cobra.Command{
		Use:   "request-wipe --volume ID [--partuuid GUID | --luks-uuid UUID | --partition DEV] [--disk DISK] [--yes] [--init] META-DEVICE",
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
			return requestWipe(dv, cmd.OutOrStdout(), args[0], f)
		},
	}
	cmd.Flags().StringVar(&f.req.Volume, "volume", "", "volume ID to wipe (EPHEMERAL, u-<name>, STATE)")
	cmd.Flags().StringVar(&f.req.PartUUID, "partuuid", "", "GPT partition GUID of the partition to wipe")
	cmd.Flags().StringVar(&f.req.LUKSUUID, "luks-uuid", "", "UUID of the LUKS header on the partition to wipe")
	cmd.Flags().StringVar(&f.partition, "partition", "", "read the LUKS UUID from this partition (or image)")
	cmd.Flags().StringVar(&f.disk, "disk", "", "the disk (or whole-disk image) holding the volume: its GPT is checked for the partition labelled --volume (default, and when META-DEVICE is a partition the only disk allowed: the disk holding META-DEVICE)")
	cmd.Flags().BoolVar(&f.yes, "yes", false, "confirm a wipe of STATE (it loses every lockToSTATE volume's salt)")
	initFlag(cmd, &f.init)
	cmd.MarkFlagRequired("volume")
	return cmd
}

// requestWipe adds a wipe request for f.req.Volume to the META at metaPath.
// It writes META only when all of these hold: the volume ID and GUIDs are
// well formed (checkWipeIDs); the disk (wipeDisk: --disk, or the disk
// holding a META partition, and no other) has exactly one partition with
// that label matching --partuuid and the LUKS UUID (findWipeTarget); for
// STATE, --yes is given; metaUpdate's conditions hold (metaPath exists and
// is the partition labelled META, or an image holding a META, or a blank
// image with --init); and meta.RequestWipe accepts the request.
func requestWipe(dv devView, out io.Writer, metaPath string, f wipeFlags) error {
	mf, err := metaOpen(metaPath, false) // before anything else: a mistyped path
	if err != nil {
		return err
	}
	mf.Close()
	req := f.req
	if err := checkWipeIDs(&req, f.partition, f.disk); err != nil {
		return err
	}
	disk, err := dv.wipeDisk(metaPath, f.disk, req.Volume)
	if err != nil {
		return err
	}
	t, err := findWipeTarget(disk, req.Volume, req.PartUUID, req.LUKSUUID)
	if err != nil {
		return err
	}
	req.PartUUID = t.entry.PartUUID
	if req.Volume == "STATE" {
		lost := "EPHEMERAL and user volumes"
		if c := t.lockedCandidates(); len(c) > 0 {
			lost = strings.Join(c, ", ") + " on this disk"
		}
		warn := fmt.Sprintf("wiping STATE destroys %s and, with it, STATE's lockToSTATE salt (%s): every volume with a lockToSTATE key (%s, if so configured) can never be opened again", t.describe(req.Volume), keys.SaltFile, lost)
		if !f.yes {
			return fmt.Errorf("%s; add --yes if that is what you want (nothing was written)", warn)
		}
		fmt.Fprintf(out, "warning: %s\n", warn)
	}
	var target string
	err = metaUpdate(dv, metaPath, f.init, func(m *meta.Meta) (bool, error) {
		if err := meta.RequestWipe(m, req); err != nil {
			return false, err
		}
		reqs, _ := meta.WipeRequests(m)
		target = reqs[len(reqs)-1].Target()
		return true, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the next boot wipes %s if its partition has %s\n", req.Volume, target)
	fmt.Fprintf(out, "  it destroys: %s\n", t.describe(req.Volume))
	fmt.Fprintf(out, "  to cancel before then: cryptctl meta cancel-wipe --volume %s %s\n", req.Volume, metaPath)
	return nil
}

// checkWipeIDs checks request-wipe's volume ID and GUIDs and fills in the
// LUKS UUID from the header on partition when given; disk, when given,
// helps name a user volume typed without its u- prefix.
func checkWipeIDs(req *meta.WipeRequest, partition, disk string) error {
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
	return nil
}

func newMetaCancelWipeCmd(dv devView) *cobra.Command {
	var volume string
	cmd := &cobra.Command{
		Use:   "cancel-wipe --volume ID META-DEVICE",
		Short: "Withdraw the wipe request for a volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return metaUpdate(dv, args[0], false, func(m *meta.Meta) (bool, error) {
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

// metaUpdate reads the META at path, applies change and writes both
// copies back. It writes only when all of these hold: path exists (it is
// never created); a block device is the partition labelled META
// (checkMETAPartition); META reads, or it is blank (all zeros; an empty
// regular file is grown to META's size) and is either a partition or init
// is set; and change returns true without an error.
func metaUpdate(dv devView, path string, init bool, change func(*meta.Meta) (bool, error)) error {
	f, err := metaOpen(path, true)
	if err != nil {
		return err
	}
	defer f.Close()
	part, err := dv.checkMETAPartition(path)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	empty := st.Mode().IsRegular() && st.Size() == 0
	m := meta.New()
	if !empty {
		m, err = meta.Read(f)
	}
	blank := empty || errors.Is(err, meta.ErrBlank)
	if blank {
		m = meta.New()
	} else if err != nil {
		return fmt.Errorf("%s: %w (not rewriting a META that cannot be read)", path, err)
	}
	changed, err := change(m)
	if err != nil || !changed {
		return err
	}
	if blank && !part && !init {
		return fmt.Errorf("%s is blank (all zeros or empty), not a META: give --init to make a new META there (is it the right file?); nothing was written", path)
	}
	if empty {
		if err := f.Truncate(meta.Size); err != nil {
			return err
		}
	}
	if err := m.Write(f); err != nil {
		return err
	}
	return f.Close()
}
