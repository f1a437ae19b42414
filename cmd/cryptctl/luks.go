package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// newLuksCmd is the cryptsetup-like LUKS2 tool, working on image files and
// block devices through unlock/luks2. Keys come only from files (or stdin
// with "-"), never from the command line.
func newLuksCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "luks",
		Short: "Format, inspect and re-key LUKS2 volumes (cryptsetup-compatible headers)",
		Long: `Work with LUKS2 headers on image files and block devices, without cryptsetup.
Headers written here are accepted by cryptsetup 2.6. Keys are read as raw bytes
from --key-file / --new-key-file ("-" reads stdin); they are never arguments.
Exit codes, as in every group: 0 done, 1 error, 2 no key slot opens with the
given key.`,
	}
	cmd.AddCommand(newLuksFormatCmd(), newLuksDumpCmd(), newLuksAddKeyCmd(), newLuksChangeKeyCmd(), newLuksRemoveKeyCmd(),
		newLuksTestKeyCmd(), newLuksTestTokenCmd(), newLuksTokenCmd(), newLuksFlagsCmd())
	return cmd
}

// luksKDFFlags are the cryptsetup-style KDF options shared by format and add-key.
type luksKDFFlags struct {
	pbkdf      string
	hash       string
	memory     int
	parallel   int
	iterations int
}

func (k *luksKDFFlags) register(cmd *cobra.Command) {
	d := luks2.DefaultKDF()
	cmd.Flags().StringVar(&k.pbkdf, "pbkdf", d.Type, "key derivation: argon2id, argon2i or pbkdf2")
	cmd.Flags().StringVar(&k.hash, "hash", "sha256", "pbkdf2 hash (sha256, sha512, ...); also the AF hash")
	cmd.Flags().IntVar(&k.memory, "pbkdf-memory", d.Memory, "argon2 memory cost in KiB")
	cmd.Flags().IntVar(&k.parallel, "pbkdf-parallel", d.Parallel, "argon2 parallel lanes")
	cmd.Flags().IntVar(&k.iterations, "pbkdf-force-iterations", 0,
		fmt.Sprintf("argon2 time cost (default %d) or pbkdf2 iterations (required for pbkdf2, at least 1000)", d.Time))
}

func (k *luksKDFFlags) kdf() (luks2.KDF, error) {
	switch k.pbkdf {
	case "pbkdf2":
		if k.iterations == 0 {
			return luks2.KDF{}, errors.New("--pbkdf pbkdf2 needs an explicit --pbkdf-force-iterations (at least 1000); costs are never benchmarked")
		}
		return luks2.KDF{Type: "pbkdf2", Hash: k.hash, Iterations: k.iterations}, nil
	case "argon2id", "argon2i":
		t := k.iterations
		if t == 0 {
			t = luks2.DefaultKDF().Time
		}
		return luks2.KDF{Type: k.pbkdf, Hash: k.hash, Time: t, Memory: k.memory, Parallel: k.parallel}, nil
	}
	return luks2.KDF{}, fmt.Errorf("--pbkdf %q: unsupported (use argon2id, argon2i or pbkdf2)", k.pbkdf)
}

// luksNewKeyFlags are what add-key and change-key share: the key file that
// authorises the change, the new passphrase and the KDF of the new slot.
type luksNewKeyFlags struct {
	keyFile, newKeyFile string
	kdf                 luksKDFFlags
}

func (f *luksNewKeyFlags) register(cmd *cobra.Command, keyUsage, newKeyUsage string) {
	cmd.Flags().StringVar(&f.keyFile, "key-file", "", keyUsage)
	cmd.Flags().StringVar(&f.newKeyFile, "new-key-file", "", newKeyUsage)
	f.kdf.register(cmd)
}

// read checks the flags and returns the KDF and the new passphrase for
// device, asked twice on a terminal, which the caller zeroes.
func (f *luksNewKeyFlags) read(cmd *cobra.Command, device string) (luks2.KDF, []byte, error) {
	kdf, err := f.kdf.kdf()
	if err != nil {
		return kdf, nil, err
	}
	if f.keyFile == "-" && f.newKeyFile == "-" {
		return kdf, nil, errors.New("--key-file and --new-key-file cannot both be stdin")
	}
	newPass, err := readPassphrase(cmd, "new-key-file", f.newKeyFile, device, true)
	return kdf, newPass, err
}

// luksReadHeader opens path and reads its header, printing any warning
// (damaged or stale header copy) to stderr.
func luksReadHeader(cmd *cobra.Command, path string, write bool) (*os.File, *luks2.Header, error) {
	dev, _, err := openDevice(path, write)
	if err != nil {
		return nil, nil, err
	}
	h, err := luks2.ReadHeader(dev)
	if err != nil {
		dev.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range h.Warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: %s\n", path, w)
	}
	return dev, h, nil
}

// luksUnlock reads the passphrase in the key file named by --flag (asked
// for on a terminal) and returns the volume key it opens (at slot, or any)
// and the slot used. The passphrase is zeroed here; the caller zeroes the
// volume key.
func luksUnlock(cmd *cobra.Command, dev *os.File, h *luks2.Header, flag, path string, slot int) ([]byte, int, error) {
	pass, err := readPassphrase(cmd, flag, path, dev.Name(), false)
	if err != nil {
		return nil, -1, err
	}
	defer clear(pass)
	vk, used, err := h.Unlock(dev, pass, slot)
	return vk, used, stdinNewlineHint(cmd, err, path, pass)
}

func newLuksFormatCmd() *cobra.Command {
	var keyFile, vkFile, label, subsystem, uuid, luksType, cipher string
	var keySize, sectorSize, slot int
	var flags []string
	var kf luksKDFFlags
	cmd := &cobra.Command{
		Use:   "format DEVICE --key-file FILE",
		Short: "Write a new LUKS2 header with one key slot (refuses devices holding a signature)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := luksCheckWritable(luksType, cipher); err != nil {
				return fmt.Errorf("format %s: %w; nothing was written", args[0], err)
			}
			kdf, err := kf.kdf()
			if err != nil {
				return fmt.Errorf("format %s: %w", args[0], err)
			}
			pass, err := readPassphrase(cmd, "key-file", keyFile, args[0], true)
			if err != nil {
				return fmt.Errorf("format %s: %w", args[0], err)
			}
			defer clear(pass)
			var vk []byte
			if vkFile != "" {
				if vk, err = readKeyFile(cmd, "volume-key-file", vkFile); err != nil {
					return fmt.Errorf("format %s: %w", args[0], err)
				}
				defer clear(vk)
			}
			dev, size, err := openDevice(args[0], true)
			if err != nil {
				return fmt.Errorf("format: %w", err)
			}
			defer dev.Close()
			h, err := luks2.Format(dev, size, pass, luks2.FormatOptions{
				Slot: slot, Cipher: cipher, KeySize: keySize, SectorSize: sectorSize, KDF: kdf,
				Label: label, Subsystem: subsystem, UUID: uuid, VolumeKey: vk, Flags: flags,
			})
			if err != nil {
				return fmt.Errorf("format %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "formatted %s: LUKS2 UUID %s, key slot %d\n", args[0], h.UUID, slot)
			luksWarnNoData(cmd, args[0], h, size)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "passphrase file for the first key slot (- = stdin)")
	cmd.Flags().StringVar(&vkFile, "volume-key-file", "", "use this volume key instead of a random one")
	cmd.Flags().IntVar(&keySize, "key-size", 512, "volume key size in bits (256 or 512)")
	cmd.Flags().IntVar(&sectorSize, "sector-size", 4096, "encryption sector size (512 or 4096)")
	keySlotFlag(cmd, &slot, 0, "key slot for the passphrase (0..31)")
	cmd.Flags().StringVar(&luksType, "type", "luks2", "header type; only luks2 is written")
	cmd.Flags().StringVar(&cipher, "cipher", "aes-xts-plain64", "data cipher; only aes-xts-plain64 is written")
	cmd.Flags().StringVar(&label, "label", "", "header label")
	cmd.Flags().StringVar(&subsystem, "subsystem", "", "header subsystem")
	cmd.Flags().StringVar(&uuid, "uuid", "", "volume UUID (random by default)")
	cmd.Flags().StringSliceVar(&flags, "persistent-flags", nil, "persistent activation flags, e.g. allow-discards")
	kf.register(cmd)
	return cmd
}

// luksCheckWritable refuses a header type or data cipher that format
// cannot write, before anything is read or written.
func luksCheckWritable(luksType, cipher string) error {
	if luksType != "luks2" {
		return fmt.Errorf("--type %q: cryptctl writes only luks2 headers (it reads luks1); use cryptsetup luksFormat --type luks1 for a LUKS1 volume", luksType)
	}
	if cipher != "aes-xts-plain64" {
		return fmt.Errorf("--cipher %q: cryptctl writes only aes-xts-plain64 (the cipher cryptsetup and Talos use by default)", cipher)
	}
	return nil
}

// luksWarnNoData warns, as cryptsetup 2.6 luksFormat does (it formats and
// exits 0), when the header leaves no room for one encryption sector of
// data: such a volume opens but cannot be activated.
func luksWarnNoData(cmd *cobra.Command, path string, h *luks2.Header, size int64) {
	for _, id := range luksSorted(h.Segments) {
		s := h.Segments[id]
		if size-int64(s.Offset) < int64(max(s.SectorSize, 512)) {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: Device %s is too small for activation, there is no remaining space for data (%d bytes, the header area takes %d).\n", path, size, s.Offset)
		}
		return
	}
}

func newLuksDumpCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dump DEVICE",
		Short: "Show the LUKS header (human readable, or the JSON metadata with --json)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, h, err := luksReadHeader(cmd, args[0], false)
			if err != nil {
				return fmt.Errorf("dump: %w", err)
			}
			defer dev.Close()
			if asJSON {
				return luksDumpJSON(cmd.OutOrStdout(), h)
			}
			luksDumpHuman(cmd.OutOrStdout(), h)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON metadata (LUKS2) or a JSON view of the header (LUKS1)")
	return cmd
}

func luksDumpJSON(w io.Writer, h *luks2.Header) error {
	var out bytes.Buffer
	if raw := h.RawJSON(); raw != nil {
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return err
		}
	} else {
		b, err := json.MarshalIndent(h, "", "  ")
		if err != nil {
			return err
		}
		out.Write(b)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// luksHex prints bytes as cryptsetup does: 16 per line, each followed by a space.
func luksHex(w io.Writer, indent string, b []byte) {
	for i := 0; i < len(b); i += 16 {
		if i > 0 {
			fmt.Fprint(w, indent)
		}
		for _, c := range b[i:min(i+16, len(b))] {
			fmt.Fprintf(w, "%02x ", c)
		}
		fmt.Fprintln(w)
	}
}

func luksSorted[T any](m map[int]T) []int {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// luksDumpHuman prints the header in cryptsetup luksDump's layout.
func luksDumpHuman(w io.Writer, h *luks2.Header) {
	orNone := func(s, none string) string {
		if s == "" {
			return none
		}
		return s
	}
	fmt.Fprintf(w, "LUKS header information\nVersion:       \t%d\n", h.Version)
	if h.Version == 2 {
		fmt.Fprintf(w, "Epoch:         \t%d\nMetadata area: \t%d [bytes]\nKeyslots area: \t%d [bytes]\n", h.Seqid, h.MetadataSize, h.KeyslotsSize)
	}
	fmt.Fprintf(w, "UUID:          \t%s\nLabel:         \t%s\nSubsystem:     \t%s\nFlags:       \t%s\n",
		h.UUID, orNone(h.Label, "(no label)"), orNone(h.Subsystem, "(no subsystem)"), orNone(strings.Join(h.Flags, " "), "(no flags)"))
	if len(h.Requirements) > 0 {
		fmt.Fprintf(w, "Requirements:\t%s\n", strings.Join(h.Requirements, " "))
	}
	if h.FromSecondary {
		fmt.Fprintf(w, "Header copy:   \tsecondary (primary damaged or stale)\n")
	}
	fmt.Fprintf(w, "\nData segments:\n")
	for _, id := range luksSorted(h.Segments) {
		s := h.Segments[id]
		fmt.Fprintf(w, "  %d: %s\n\toffset: %d [bytes]\n", id, s.Type, s.Offset)
		if s.Dynamic {
			fmt.Fprintf(w, "\tlength: (whole device)\n")
		} else {
			fmt.Fprintf(w, "\tlength: %d [bytes]\n", s.Size)
		}
		fmt.Fprintf(w, "\tcipher: %s\n\tsector: %d [bytes]\n", s.Encryption, s.SectorSize)
	}
	fmt.Fprintf(w, "\nKeyslots:\n")
	for _, id := range luksSorted(h.Keyslots) {
		k := h.Keyslots[id]
		fmt.Fprintf(w, "  %d: %s\n\tKey:        %d bits\n\tPriority:   %s\n\tCipher:     %s\n\tCipher key: %d bits\n\tPBKDF:      %s\n",
			id, k.Type, k.KeySize*8, k.Priority, k.Area.Encryption, k.Area.KeySize*8, k.KDF.Type)
		if k.KDF.Type == "pbkdf2" {
			fmt.Fprintf(w, "\tHash:       %s\n\tIterations: %d\n", k.KDF.Hash, k.KDF.Iterations)
		} else {
			fmt.Fprintf(w, "\tTime cost:  %d\n\tMemory:     %d\n\tThreads:    %d\n", k.KDF.Time, k.KDF.Memory, k.KDF.Parallel)
		}
		fmt.Fprintf(w, "\tSalt:       ")
		luksHex(w, "\t            ", k.KDF.Salt)
		fmt.Fprintf(w, "\tAF stripes: %d\n\tAF hash:    %s\n\tArea offset:%d [bytes]\n\tArea length:%d [bytes]\n",
			k.AFStripes, k.AFHash, k.Area.Offset, k.Area.Size)
		for _, did := range luksSorted(h.Digests) {
			for _, s := range h.Digests[did].Keyslots {
				if s == id {
					fmt.Fprintf(w, "\tDigest ID:  %d\n", did)
				}
			}
		}
	}
	fmt.Fprintf(w, "Tokens:\n")
	for _, id := range luksSorted(h.Tokens) {
		t := h.Tokens[id]
		fmt.Fprintf(w, "  %d: %s\n", id, t.Type)
		if t.Type == "luks2-keyring" {
			var kr struct {
				KeyDescription string `json:"key_description"`
			}
			json.Unmarshal(t.Raw, &kr)
			fmt.Fprintf(w, "\tKey description: %s\n", kr.KeyDescription)
		}
		for _, s := range t.Keyslots {
			fmt.Fprintf(w, "\tKeyslot:    %d\n", s)
		}
	}
	fmt.Fprintf(w, "Digests:\n")
	for _, id := range luksSorted(h.Digests) {
		d := h.Digests[id]
		fmt.Fprintf(w, "  %d: %s\n\tHash:       %s\n\tIterations: %d\n\tSalt:       ", id, d.Type, d.Hash, d.Iterations)
		luksHex(w, "\t            ", d.Salt)
		fmt.Fprintf(w, "\tDigest:     ")
		luksHex(w, "\t            ", d.Digest)
	}
}

func newLuksAddKeyCmd() *cobra.Command {
	var nk luksNewKeyFlags
	var vkFile string
	var slot int
	cmd := &cobra.Command{
		Use:   "add-key DEVICE (--key-file FILE | --volume-key-file FILE) --new-key-file FILE",
		Short: "Add a key slot, authorised by an existing passphrase or by the volume key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return fmt.Errorf("add-key %s: %w", args[0], err) }
			if (nk.keyFile == "") == (vkFile == "") {
				return fail(errors.New("give exactly one of --key-file (an existing passphrase) or --volume-key-file"))
			}
			kdf, newPass, err := nk.read(cmd, args[0])
			defer clear(newPass)
			if err != nil {
				return fail(err)
			}
			dev, h, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fail(err)
			}
			defer dev.Close()
			var vk []byte
			if vkFile != "" {
				if vk, err = readKeyFile(cmd, "volume-key-file", vkFile); err != nil {
					return fail(err)
				}
			} else if vk, _, err = luksUnlock(cmd, dev, h, "key-file", nk.keyFile, luks2.AnySlot); err != nil {
				return fail(err)
			}
			defer clear(vk)
			used, err := luks2.AddKeyslot(dev, vk, newPass, slot, kdf)
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added key slot %d to %s\n", used, args[0])
			return nil
		},
	}
	nk.register(cmd, "an existing passphrase (- = stdin)", "the passphrase to add (- = stdin)")
	cmd.Flags().StringVar(&vkFile, "volume-key-file", "", "authorise with the raw volume key instead")
	keySlotFlag(cmd, &slot, luks2.AnySlot, "key slot to use (default: first free)")
	return cmd
}

func newLuksChangeKeyCmd() *cobra.Command {
	var nk luksNewKeyFlags
	var slot int
	cmd := &cobra.Command{
		Use:   "change-key DEVICE --key-file FILE --new-key-file FILE [--key-slot N]",
		Short: "Replace the passphrase of the key slot the old one opens, in one crash-safe step",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return fmt.Errorf("change-key %s: %w", args[0], err) }
			kdf, newPass, err := nk.read(cmd, args[0])
			defer clear(newPass)
			if err != nil {
				return fail(err)
			}
			dev, h, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fail(err)
			}
			defer dev.Close()
			vk, used, err := luksUnlock(cmd, dev, h, "key-file", nk.keyFile, slot)
			if err != nil {
				return fail(err)
			}
			defer clear(vk)
			if err := luks2.ReplaceKeyslot(dev, vk, newPass, used, kdf); err != nil {
				return fail(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key slot %d of %s has a new passphrase\n", used, args[0])
			return nil
		},
	}
	nk.register(cmd, "the current passphrase (- = stdin)", "the new passphrase (- = stdin)")
	keySlotFlag(cmd, &slot, luks2.AnySlot, "only change this key slot")
	return cmd
}

func newLuksRemoveKeyCmd() *cobra.Command {
	var slot int
	var keyFile string
	cmd := &cobra.Command{
		Use:   "remove-key DEVICE --key-slot N [--key-file FILE]",
		Short: "Remove a key slot and wipe its key material (never the last one)",
		Long: `Remove a key slot and wipe its key material. The last key slot of a volume is
never removed. With --key-file, the key must open a slot other than the one
being removed, proving you keep a way in. Without it, as cryptsetup
luksKillSlot, you are asked to type YES on the terminal; -q/--batch skips
the question (without a terminal and without -q the command refuses).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return fmt.Errorf("remove-key %s slot %d: %w", args[0], slot, err) }
			if !keySlotChanged(cmd) {
				return fail(errors.New("--key-slot is required"))
			}
			dev, h, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fail(err)
			}
			defer dev.Close()
			if keyFile != "" {
				pass, err := readPassphrase(cmd, "key-file", keyFile, args[0], false)
				if err != nil {
					return fail(err)
				}
				kept := false
				for _, id := range luksSorted(h.Keyslots) {
					if id == slot {
						continue
					}
					if vk, _, err := h.Unlock(dev, pass, id); err == nil {
						clear(vk)
						kept = true
						break
					}
				}
				if !kept {
					err := stdinNewlineHint(cmd, fmt.Errorf("--key-file opens no other key slot: %w", luks2.ErrNoKeyslotOpens), keyFile, pass)
					clear(pass)
					return fail(err)
				}
				clear(pass)
			} else if _, ok := h.Keyslots[slot]; ok && len(h.Keyslots) > 1 {
				// as luksKillSlot: no key proves another slot still opens
				// (the last slot is refused below, without asking)
				others := len(h.Keyslots) - 1
				warn := fmt.Sprintf("this removes key slot %d of %s and no --key-file proves that one of the %d other key slot(s) still opens it: if you know none of their keys, the data is lost", slot, args[0], others)
				if err := confirm(cmd, warn); err != nil {
					return fail(err)
				}
			}
			if err := luks2.KillKeyslot(dev, slot); err != nil {
				return fail(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed key slot %d from %s\n", slot, args[0])
			return nil
		},
	}
	keySlotFlag(cmd, &slot, -1, "key slot to remove (0..31)")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "optional: a passphrase that must open another slot")
	return cmd
}

func newLuksTestKeyCmd() *cobra.Command {
	var keyFile string
	var slot int
	cmd := &cobra.Command{
		Use:   "test-key DEVICE --key-file FILE [--key-slot N]",
		Short: "Exit 0 only if the key opens a key slot (exit 2 if none does)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return fmt.Errorf("test-key %s: %w", args[0], err) }
			dev, h, err := luksReadHeader(cmd, args[0], false)
			if err != nil {
				return fail(err)
			}
			defer dev.Close()
			vk, used, err := luksUnlock(cmd, dev, h, "key-file", keyFile, slot)
			if err != nil {
				return fail(err)
			}
			clear(vk)
			fmt.Fprintf(cmd.OutOrStdout(), "key slot %d unlocked\n", used)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "the passphrase to test (- = stdin)")
	keySlotFlag(cmd, &slot, luks2.AnySlot, "only try this key slot")
	return cmd
}

func newLuksTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Import, export or remove LUKS2 tokens"}
	var id int
	var jsonFile string
	var replace bool
	idFlag := func(c *cobra.Command, def int, usage string) {
		c.Flags().IntVar(&id, "token-id", def, usage)
	}
	imp := &cobra.Command{
		Use:   "import DEVICE [--token-id N] [--json-file FILE] [--replace]",
		Short: "Store a token (JSON from --json-file or stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readFileOrStdin(cmd, jsonFile)
			if err != nil {
				return fmt.Errorf("token import: %w", err)
			}
			dev, _, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fmt.Errorf("token import: %w", err)
			}
			defer dev.Close()
			used, err := luks2.ImportToken(dev, id, bytes.TrimSpace(b), replace)
			if err != nil {
				return fmt.Errorf("token import %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %d imported into %s\n", used, args[0])
			return nil
		},
	}
	idFlag(imp, luks2.AnyToken, "token id (default: first free)")
	imp.Flags().StringVar(&jsonFile, "json-file", "", "token JSON file (default: stdin)")
	imp.Flags().BoolVar(&replace, "replace", false, "replace a token already stored under --token-id")

	exp := &cobra.Command{
		Use:   "export DEVICE --token-id N",
		Short: "Print a token's JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, h, err := luksReadHeader(cmd, args[0], false)
			if err != nil {
				return fmt.Errorf("token export: %w", err)
			}
			defer dev.Close()
			t, ok := h.Tokens[id]
			if !ok {
				return fmt.Errorf("token export %s token %d: %w", args[0], id, luks2.ErrTokenNotFound)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", t.Raw)
			return err
		},
	}
	idFlag(exp, -1, "token id")
	exp.MarkFlagRequired("token-id")

	rm := &cobra.Command{
		Use:   "remove DEVICE --token-id N",
		Short: "Remove a token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, _, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fmt.Errorf("token remove: %w", err)
			}
			defer dev.Close()
			if err := luks2.RemoveToken(dev, id); err != nil {
				return fmt.Errorf("token remove %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %d removed from %s\n", id, args[0])
			return nil
		},
	}
	idFlag(rm, -1, "token id")
	rm.MarkFlagRequired("token-id")
	cmd.AddCommand(imp, exp, rm)
	return cmd
}

func newLuksFlagsCmd() *cobra.Command {
	var set []string
	var clearAll bool
	cmd := &cobra.Command{
		Use:   "flags DEVICE (--set allow-discards,... | --clear)",
		Short: "Set or clear persistent activation flags (allow-discards, same-cpu-crypt, ...)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if clearAll == (len(set) > 0) {
				return errors.New("flags: give exactly one of --set or --clear")
			}
			dev, _, err := luksReadHeader(cmd, args[0], true)
			if err != nil {
				return fmt.Errorf("flags: %w", err)
			}
			defer dev.Close()
			if err := luks2.SetFlags(dev, set); err != nil {
				return fmt.Errorf("flags %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&set, "set", nil, "flags to store (replaces the current set)")
	cmd.Flags().BoolVar(&clearAll, "clear", false, "remove every persistent flag")
	return cmd
}
