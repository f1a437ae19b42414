package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/netboot/kms"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// newVolumeCmd runs the unlock engine on image files or block devices
// (without device-mapper: it proves a key opens, it does not map).
func newVolumeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "volume", Short: "Work with volumes with the unlock engine"}
	dv := hostDevView()
	cmd.AddCommand(
		newVolumeSubCmd(dv, "open", "Find the configured key that opens the volume and prove it (writes nothing)"),
		newVolumeSubCmd(dv, "format", "Format an EMPTY partition with the configured keys (refuses any signature)"),
		newVolumeSubCmd(dv, "sync", "Open the volume and bring its keyslots in line with the config"),
		newVolumeSubCmd(dv, "unlock", "What the boot does: open, or format if empty, then sync"),
		newVolumeSaltCmd(),
	)
	return cmd
}

type volumeFlags struct {
	config, volume, device, nodeUUID, stateDir, metaDev string
	verbose, trustMeta                                  bool
	tpm                                                 tpmFlags
	kms                                                 kmsFlags
	dryRun                                              bool // sync: plan only, write nothing
	dv                                                  devView
}

func newVolumeSubCmd(dv devView, op, short string) *cobra.Command {
	f := volumeFlags{dv: dv}
	cmd := &cobra.Command{
		Use:   op + " DEVICE --volume ID [--config machine.yaml] [--meta META [--trust-meta]] [--node-uuid U] [--state-dir DIR]",
		Short: short,
		Long: short + `.

The config named by --config is trusted: it may format the volume and change
its key slots. STATE's config read from META tag 9 (no --config, or one
without STATE) is cleartext anyone holding the disk can write: it only opens
(no format, no key slot change) unless --trust-meta says you checked it
(cryptctl meta get --tag 9 META).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, err := deviceArg(cmd, args, f.device)
			if err != nil {
				return err
			}
			f.device = dev
			return volumeRun(cmd, op, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "machine config (multi-document YAML)")
	fl.StringVar(&f.volume, "volume", "", "volume ID: STATE, EPHEMERAL or u-<name>")
	deviceFlag(cmd, &f.device)
	fl.StringVar(&f.nodeUUID, "node-uuid", "", "node UUID for nodeID/kms keys (default: META tag 15, then SMBIOS)")
	fl.StringVar(&f.stateDir, "state-dir", "", "root of STATE's filesystem, for lockToSTATE salts")
	fl.StringVar(&f.metaDev, "meta", "", "META partition or image: STATE's config when the machine config has none (and kept in step with it)")
	fl.BoolVar(&f.trustMeta, "trust-meta", false, "let STATE's config from META tag 9 format STATE and change its key slots (check it first)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log each key tried")
	f.tpm.register(fl, "tpm keys need it (none: they are unavailable; the host's TPM is never used unasked)")
	f.kms.register(fl)
	if op != "open" {
		fl.BoolVar(&f.tpm.allowPCR15, "allow-pcr15", false, "seal new tpm slots even though the TPM's PCR 15 is not zero (such a slot unseals only while PCR 15 holds that value again)")
	}
	if op == "sync" {
		fl.BoolVar(&f.dryRun, "dry-run", false, "print the slots sync would add, re-key and remove, and why; write nothing (the device and META are opened read-only)")
	}
	cmd.MarkFlagRequired("volume")
	return cmd
}

// volumeWrites says what a volume command writes. open and sync --dry-run
// write nothing: the device and META are opened read-only. format, sync and
// unlock open both for writing: the device gets a LUKS2 header (format, and
// unlock of an EMPTY partition; the engine refuses any signature) and key
// slot changes (sync, unlock: only slots that differ from the config, never
// the last key that opened it); with --meta, META gets tag 9 brought in
// line with the machine config's STATE (meta.ReadStateConfig) and the
// engine's format journal, and only when --meta is not a block device or is
// the partition labelled META (checkMETAPartition).
func volumeWrites(op string, dryRun bool) (dev, metaTags, journal bool) {
	w := op != "open" && !dryRun
	return w, w, w
}

// volumeRun runs op (open, format, sync, unlock) on f.device; what it may
// write is volumeWrites'.
func volumeRun(cmd *cobra.Command, op string, f *volumeFlags) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	writeDev, writeMeta, writeJournal := volumeWrites(op, f.dryRun)
	cfg, err := volumeMachineConfig(cmd.ErrOrStderr(), f)
	if err != nil {
		return err
	}
	var metaDev *os.File
	if f.metaDev != "" {
		if writeMeta {
			if _, err := f.dv.checkMETAPartition(f.metaDev); err != nil {
				return fmt.Errorf("--meta: %w", err)
			}
		}
		if metaDev, _, err = openDevice(f.metaDev, writeMeta); err != nil {
			return err
		}
		defer metaDev.Close()
	}
	vol, uuidOverride, err := volumeConfig(cmd.ErrOrStderr(), cfg, f, metaDev, writeMeta)
	if err != nil {
		return err
	}
	uuid := newTracedUUID(f.nodeUUID, uuidOverride)
	e, kmsClient, done, err := volumeEngine(cmd.ErrOrStderr(), f, uuid)
	if err != nil {
		return err
	}
	defer done()
	if metaDev != nil && writeJournal {
		e.Journal = &meta.Journal{Dev: metaDev}
	}
	dev, size, err := openDevice(f.device, writeDev)
	if err != nil {
		return err
	}
	defer dev.Close()
	res, err := volumeOp(ctx, e, op, f.dryRun, vol, dev, size, kmsClient)
	if err != nil {
		if d := uuid.describe(); d != "" {
			err = fmt.Errorf("%w\n  (%s)", err, d)
		}
		return err
	}
	defer res.Zero()
	if writeDev {
		if err := dev.Sync(); err != nil {
			return err
		}
	}
	return volumeReport(cmd.OutOrStdout(), op, f, vol, dev, res)
}

// volumeMachineConfig checks --node-uuid and reads --config, if given, as
// a config the operator vouches for.
func volumeMachineConfig(log io.Writer, f *volumeFlags) (*config.Config, error) {
	if f.nodeUUID != "" {
		u, err := checkNodeUUID(f.nodeUUID)
		if err != nil {
			return nil, err
		}
		f.nodeUUID = u
	}
	if f.config == "" {
		return nil, nil
	}
	c, err := config.ParseFile(f.config)
	if err != nil {
		return nil, err
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(log, "warning: %s\n", w)
	}
	// the operator named this file: they vouch for it
	for i := range c.Volumes {
		c.Volumes[i].Trust = config.Trust{Source: f.config, Authenticated: true}
	}
	return c, nil
}

// volumeEngine makes the unlock engine with the key sources the flags name
// (node UUID, KMS, lockToSTATE salt, TPM); done releases them.
func volumeEngine(log io.Writer, f *volumeFlags, uuid *tracedUUID) (*unlock.Engine, *kms.Client, func(), error) {
	kmsOpts, err := f.kms.options()
	if err != nil {
		return nil, nil, nil, err
	}
	kmsClient := kms.New(kmsOpts)
	e := &unlock.Engine{
		Env:      keys.Env{NodeUUID: uuid, KMS: kmsClient, Salt: cmdSalt{f.stateDir}},
		StateDir: f.stateDir,
	}
	closeTPM := func() {}
	if f.tpm.device != "" {
		if closeTPM, err = volumeTPM(&e.Env, &f.tpm); err != nil {
			kmsClient.Close()
			return nil, nil, nil, err
		}
	}
	if f.verbose {
		e.Log = slog.New(slog.NewTextHandler(log, nil))
	}
	return e, kmsClient, func() { closeTPM(); kmsClient.Close() }, nil
}

// volumeOp runs op with e; sync --dry-run syncs an in-memory overlay of
// dev, with a KMS that seals nothing.
func volumeOp(ctx context.Context, e *unlock.Engine, op string, dryRun bool, vol *config.Volume, dev *os.File, size int64, kmsClient *kms.Client) (*unlock.Result, error) {
	switch op {
	case "open":
		return e.Open(ctx, *vol, dev)
	case "format":
		return e.Format(ctx, *vol, dev, size)
	case "sync":
		res, err := e.Open(ctx, *vol, dev)
		if err == nil && dryRun {
			e.Env.KMS = dryRunKMS{kmsClient}
			res.Sync = e.Sync(ctx, *vol, newOverlay(dev, size), res)
		} else if err == nil {
			res.Sync = e.Sync(ctx, *vol, dev, res)
		}
		return res, err
	case "unlock":
		return e.Unlock(ctx, *vol, dev, size)
	}
	return nil, fmt.Errorf("unknown volume operation %q", op)
}

// volumeReport prints res (and for sync --dry-run the plan, for open what
// sync would change); a sync with problems is exitSyncProblems.
func volumeReport(out io.Writer, op string, f *volumeFlags, vol *config.Volume, dev *os.File, res *unlock.Result) error {
	if f.dryRun {
		rep := res.Sync
		res.Sync = nil
		volumePrint(out, f.device, res)
		syncPlan(out, vol, rep)
		res.Sync = rep
	} else {
		volumePrint(out, f.device, res)
	}
	if op == "open" {
		printSyncPreview(out, vol, dev, res)
	}
	if res.Sync != nil && len(res.Sync.Problems) > 0 {
		return &exitError{code: exitSyncProblems, err: fmt.Errorf("%s opened, but sync had problems", vol.ID)}
	}
	return nil
}

// volumeConfig picks the volume's config: the machine config's, or for
// STATE the one in META (tag 9); it also returns META tag 15 (UUID override).
func volumeConfig(log io.Writer, cfg *config.Config, f *volumeFlags, mf *os.File, write bool) (*config.Volume, []byte, error) {
	var override []byte
	if mf != nil {
		m, err := meta.Read(mf)
		if err != nil && !errors.Is(err, meta.ErrBlank) {
			return nil, nil, fmt.Errorf("META %s: %w", f.metaDev, err)
		}
		if m != nil {
			override, _ = m.Get(meta.TagUUIDOverride)
		}
		if f.volume == config.StateVolume {
			var vol *config.Volume
			var src string
			if write {
				vol, src, err = meta.ReadStateConfig(cfg, mf)
			} else {
				if m == nil {
					m = meta.New()
				}
				var changed bool
				vol, src, changed, err = meta.StateConfig(cfg, m)
				if changed && f.dryRun {
					fmt.Fprintf(log, "dry run: a sync would update META tag %d to match the machine config (not written)\n", meta.TagStateEncryptionConfig)
				}
			}
			if err != nil {
				return nil, nil, err
			}
			if vol == nil {
				return nil, nil, errors.New("STATE is not encrypted in the machine config nor in META")
			}
			fmt.Fprintf(log, "STATE encryption config from the %s\n", src)
			if src == meta.SourceMETA {
				vol.Trust = config.Trust{Source: "META tag 9", Authenticated: f.trustMeta}
				switch {
				case write && f.trustMeta:
					fmt.Fprintln(log, "note: META tag 9 is cleartext that anyone holding the disk can write; --trust-meta: this command formats STATE and changes its key slots from it")
				case write:
					fmt.Fprintf(log, "note: META tag 9 is cleartext that anyone holding the disk can write: this command only opens STATE with it (no format, no key slot change); check it (cryptctl meta get --tag %d %s) and add --trust-meta, or give the machine config with --config\n", meta.TagStateEncryptionConfig, f.metaDev)
				}
			}
			return vol, override, nil
		}
	}
	if cfg == nil {
		return nil, nil, errors.New("give --config (or --meta for STATE)")
	}
	vol := cfg.Volume(f.volume)
	if vol == nil {
		var ids []string
		for _, v := range cfg.Volumes {
			ids = append(ids, v.ID)
		}
		return nil, nil, fmt.Errorf("%s has no volume %s (it has: %s)", f.config, f.volume, strings.Join(ids, ", "))
	}
	if !vol.Encrypted() {
		return nil, nil, fmt.Errorf("volume %s is not encrypted in %s", vol.ID, f.config)
	}
	return vol, override, nil
}

func volumePrint(w io.Writer, device string, r *unlock.Result) {
	verb := "opened"
	if r.Formatted {
		verb = "formatted"
	}
	fmt.Fprintf(w, "%s %s on %s with slot %d (%s); LUKS2 UUID %s\n", verb, r.VolumeID, device, r.Slot, r.Kind, r.UUID)
	for _, a := range r.Attempts {
		if a.Err != nil {
			fmt.Fprintf(w, "  tried %s\n", a)
		}
	}
	m := r.Mapping
	size := "to the end of the device"
	if !m.Dynamic {
		size = fmt.Sprintf("%d bytes", m.Size)
	}
	fmt.Fprintf(w, "  dm-crypt: %s, %d-bit key, data at %d, %s, %d-byte sectors, allow-discards %v\n",
		m.Cipher, m.KeySize*8, m.Offset, size, m.SectorSize, m.AllowDiscards)
	if r.Formatted {
		fmt.Fprintln(w, "  fresh volume: make its filesystem after mapping")
	}
	if r.Sync != nil {
		fmt.Fprintf(w, "  keyslots: %s\n", r.Sync)
	}
}
