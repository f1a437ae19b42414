package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/probe"
	"golang.org/x/sys/unix"
)

// Where the machine config came from (logged, and decides whether STATE's
// copy is refreshed).
const (
	SourceCmdline  = "cryptinit.config="
	SourceEmbedded = "embedded " + EmbeddedConfig
	SourceState    = "copy on STATE"
)

// Which sources are authenticated (config.Trust), i.e. may choose the keys
// of a volume (format it, enroll, re-key or remove slots), and which may
// only open what is there:
//   - the embedded config and a cryptinit.config=/path inside the
//     initramfs: authenticated, the initramfs is part of the signed UKI;
//   - cryptinit.config=DEVICE:/path (an ESP or any other partition): not
//     authenticated, whoever holds the disk can write it, although the
//     command line naming it is signed;
//   - the copy on STATE: authenticated only when that STATE is provably
//     the node's own (stateCopyTrust), and not saved from a source that
//     is not authenticated, which StateConfigUntrusted beside it records;
//   - META tag 9 (unlock/meta): never authenticated.

// StateConfigUntrusted, beside STATE's config copy, names the source the
// copy came from when that source was not authenticated: the copy then
// stays unauthenticated, so that a config from an ESP cannot become
// trusted by being copied into STATE.
const StateConfigUntrusted = "config.unauthenticated"

type machineConfig struct {
	cfg    *config.Config // nil: none found yet
	data   []byte
	source string
	trust  config.Trust // given to every volume of cfg
}

// ConfigSpec is a parsed cryptinit.config= value.
type ConfigSpec struct {
	Device string // "" for a path inside the initramfs; else PARTLABEL=, PARTUUID=, UUID= or /dev/
	Path   string // absolute path (inside the initramfs, or inside Device's filesystem)
}

// configDeviceForms are the device specs cryptinit.config= takes, as
// root= does.
var configDeviceForms = []string{"PARTLABEL=", "PARTUUID=", "UUID=", "/dev/"}

// ParseConfigSpec parses /path or <device>:/path, where <device> is
// PARTLABEL=<label>, PARTUUID=<GPT partition GUID>, UUID=<filesystem UUID>
// or /dev/<name>.
func ParseConfigSpec(s string) (ConfigSpec, error) {
	if strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "/dev/") {
		return ConfigSpec{Path: s}, nil
	}
	const want = "want /path or DEVICE:/path, DEVICE being PARTLABEL=<label>, PARTUUID=<guid>, UUID=<uuid> or /dev/<name>"
	i := strings.LastIndex(s, ":/")
	if i < 0 {
		return ConfigSpec{}, fmt.Errorf("cryptinit.config=%q: %s", s, want)
	}
	spec := ConfigSpec{Device: s[:i], Path: s[i+1:]}
	for _, f := range configDeviceForms {
		if strings.HasPrefix(spec.Device, f) && len(spec.Device) > len(f) {
			return spec, nil
		}
	}
	return ConfigSpec{}, fmt.Errorf("cryptinit.config=%q: %s", s, want)
}

// loadMachineConfig applies the precedence: cryptinit.config=, then the
// embedded file. The STATE copy comes later (configFromState).
func (b *Boot) loadMachineConfig(ctx context.Context) (*machineConfig, error) {
	mc := &machineConfig{}
	err := b.step("config", "", func() error {
		if b.Cmdline.Config != "" {
			data, err := b.readConfigSource(ctx, b.Cmdline.Config)
			if err == nil {
				// read, so the spec parsed: a path without a device is
				// inside the signed initramfs
				spec, _ := ParseConfigSpec(b.Cmdline.Config)
				return mc.parse(data, SourceCmdline+b.Cmdline.Config, spec.Device == "")
			}
			b.logf("config: cryptinit.config=%s not read: %v; trying the embedded config", b.Cmdline.Config, err)
		}
		data, err := os.ReadFile(b.path(EmbeddedConfig))
		if err == nil {
			return mc.parse(data, SourceEmbedded, true)
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read %s: %w", EmbeddedConfig, err)
		}
		b.logf("config: no machine config in the image or on the command line; STATE's comes from META, the others from STATE")
		return nil
	})
	if err != nil {
		return nil, configFatal(err)
	}
	if mc.cfg != nil {
		b.logConfig(mc)
	}
	return mc, nil
}

// parse parses the config read from source and gives each of its volumes
// the source's trust.
func (mc *machineConfig) parse(data []byte, source string, authenticated bool) error {
	cfg, err := config.Parse(data)
	if err != nil {
		return fmt.Errorf("machine config from %s: %w", source, err)
	}
	mc.trust = config.Trust{Source: source, Authenticated: authenticated}
	for i := range cfg.Volumes {
		cfg.Volumes[i].Trust = mc.trust
	}
	mc.cfg, mc.data, mc.source = cfg, data, source
	return nil
}

func (b *Boot) logConfig(mc *machineConfig) {
	var ids []string
	for _, v := range mc.cfg.Volumes {
		enc := "plain"
		if v.Encrypted() {
			enc = fmt.Sprintf("%d keys", len(v.Encryption.Keys))
		}
		ids = append(ids, v.ID+" ("+enc+")")
	}
	b.logf("config: machine config from %s: %s", mc.source, strings.Join(ids, ", "))
	if !mc.trust.Authenticated {
		b.logf("config: %s is not authenticated: it opens volumes but never formats them or changes their key slots", mc.source)
	}
	for _, w := range mc.cfg.Warnings {
		b.logf("config: warning: %s", w)
	}
}

func configFatal(err error) *Fatal {
	return &Fatal{Failure: console.Failure{Reason: err,
		Hint: "fix the machine config (cryptctl config check FILE shows every problem), rebuild the image or fix the file named by cryptinit.config="}}
}

// readConfigSource reads the file a cryptinit.config= value names.
func (b *Boot) readConfigSource(ctx context.Context, s string) ([]byte, error) {
	spec, err := ParseConfigSpec(s)
	if err != nil {
		return nil, err
	}
	if spec.Device == "" {
		return os.ReadFile(b.path(spec.Path))
	}
	dev := spec.Device
	if !strings.HasPrefix(dev, "/dev/") {
		var required []string
		if l := devices.Label(dev); l != "" {
			required = []string{l}
		}
		found, err := b.Devices.Wait(ctx, required, b.Cmdline.Wait)
		if err != nil {
			return nil, err
		}
		if dev, err = b.configSourceDevice(ctx, spec.Device, found); err != nil {
			return nil, err
		}
	}
	fstype, err := b.detectFS(dev)
	if err != nil {
		return nil, err
	}
	dir := b.path(ConfigSrcDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b.awaitFS(ctx, fstype, "")
	if err := b.Mounter.Mount(dev, dir, fstype, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return nil, fmt.Errorf("mount %s (%s) read-only: %w%s", dev, fstype, err, b.moduleNote(fstype))
	}
	defer b.Mounter.Unmount(dir)
	return os.ReadFile(filepath.Join(dir, spec.Path))
}

// fsProbeSize is how much of a device detectFS reads: every filesystem
// it names (and LUKS) has its signature in the first 128 KiB (btrfs, the
// deepest, at 64 KiB). Reading the whole 2 MiB a full probe checks costs
// ~0.15 s per volume under TCG, where each byte of a mapped volume is
// decrypted by an emulated CPU.
const fsProbeSize = 128 << 10

// detectFS names the filesystem on dev from its signature.
func (b *Boot) detectFS(dev string) (string, error) {
	f, size, err := b.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	res, err := probe.Probe(f, min(size, fsProbeSize))
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", dev, err)
	}
	for _, s := range res.Signatures {
		switch n := strings.ToLower(s.Name); {
		case n == "xfs", n == "ext4", n == "ext3", n == "ext2", n == "vfat", n == "btrfs", n == "squashfs":
			return n, nil
		case strings.HasPrefix(n, "vfat"), strings.HasPrefix(n, "fat"):
			return "vfat", nil
		case strings.HasPrefix(n, "ext"):
			return "ext4", nil
		}
	}
	if len(res.Signatures) == 0 {
		return "", fmt.Errorf("%s holds no filesystem", dev)
	}
	return "", fmt.Errorf("%s holds %s, not a filesystem cryptinit mounts", dev, res.Signatures[0].Name)
}

// configFromState reads the config copy on the mounted STATE when no other
// source had one, for the volumes after STATE, with the trust
// stateCopyTrust gives it.
func (b *Boot) configFromState(ctx context.Context, mc *machineConfig, plan *plan) error {
	st := plan.state
	if st == nil || !st.mounted {
		return nil
	}
	for _, name := range []string{filepath.Join(StateConfigDir, "config.yaml"), "config.yaml"} {
		data, err := os.ReadFile(filepath.Join(b.stagingDir(st.ID), name))
		if err != nil {
			continue
		}
		trust := b.stateCopyTrust(st, SourceState+" ("+name+")")
		if err := mc.parse(data, trust.Source, trust.Authenticated); err != nil {
			return configFatal(err)
		}
		b.logConfig(mc)
		return b.planFromConfig(ctx, mc, plan)
	}
	b.logf("config: STATE holds no machine config copy either; volumes other than STATE are used as plain filesystems")
	return b.planFromConfig(ctx, mc, plan)
}

// stateCopyTrust says whether the config copy (source) on the open STATE
// st may choose keys. Only a boot that opened the node's own STATE wrote
// it, so it is authenticated only when st is provably that STATE: opened
// with an authenticated config, or by a tpm key (sealed to this TPM's
// PCR 7 and to PCR 15 before any latch). It is not authenticated when
//   - STATE is plain: whoever holds the disk can write it;
//   - STATE was opened by another key with its config from an
//     unauthenticated source (META tag 9): that person can put a STATE
//     of their own on the disk and its key in tag 9;
//   - StateConfigUntrusted beside it says it was saved from a source
//     that is not authenticated.
func (b *Boot) stateCopyTrust(st *volume, source string) config.Trust {
	if from, err := os.ReadFile(filepath.Join(b.stagingDir(st.ID), StateConfigDir, StateConfigUntrusted)); err == nil {
		return config.Trust{Source: fmt.Sprintf("%s, saved from %s", source, strings.TrimSpace(string(from)))}
	}
	switch {
	case !st.encrypted():
		return config.Trust{Source: source + " on a plain (unencrypted) STATE"}
	case !st.cfg.Trust.Authenticated && st.openedBy != config.KindTPM:
		src := st.cfg.Trust.Source
		if src == "" {
			src = "an unauthenticated source"
		}
		return config.Trust{Source: fmt.Sprintf("%s, on a STATE opened by a %s key from %s", source, st.openedBy, src)}
	}
	return config.Trust{Source: source, Authenticated: true}
}

// saveConfigCopy refreshes cryptinit/config.yaml on STATE so that a boot
// without the machine config can still open the other volumes. A config
// that is not authenticated is saved with StateConfigUntrusted beside it
// (written first, removed last: a crash leaves the copy marked, never a
// copy from an unauthenticated source unmarked).
func (b *Boot) saveConfigCopy(mc *machineConfig, plan *plan) {
	if plan == nil || plan.state == nil || !plan.state.mounted || mc.data == nil {
		return
	}
	if strings.HasPrefix(mc.source, SourceState) {
		return // the copy itself: already there, and keeping it must not mark it
	}
	dir := filepath.Join(b.stagingDir(plan.state.ID), StateConfigDir)
	path := filepath.Join(dir, "config.yaml")
	marker := filepath.Join(dir, StateConfigUntrusted)
	_, err := os.Stat(marker)
	marked := err == nil
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, mc.data) && marked == !mc.trust.Authenticated {
		return
	}
	err = os.MkdirAll(dir, 0o700)
	if err == nil && !mc.trust.Authenticated {
		err = writeFileAtomic(marker, []byte(mc.source+"\n"), 0o600)
		if err == nil {
			err = syncDir(dir) // the mark is on disk before the copy it marks
		}
	}
	if err == nil {
		err = writeFileAtomic(path, mc.data, 0o600)
	}
	if err == nil && mc.trust.Authenticated && marked {
		err = os.Remove(marker)
	}
	if err != nil {
		b.logf("config: could not keep a copy on STATE: %v", err)
		return
	}
	b.logf("config: copy kept on STATE at %s/config.yaml", StateConfigDir)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
