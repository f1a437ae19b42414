package boot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/boot/mkfs"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// volume is one partition the boot opens and mounts.
type volume struct {
	ID         string
	cfg        *config.Volume // nil: no config, used as a plain filesystem
	part       devices.Block
	mountPoint string // inside the new root
	fs         string // filesystem for a fresh volume

	mounted  bool
	device   string // what was mounted: /dev/mapper/luks2-ID or the partition
	openedBy string // kind of the key that opened (or formatted) it; "" for a plain volume
}

func (v *volume) encrypted() bool { return v.cfg != nil && v.cfg.Encrypted() }

// plan is what the boot found and decided before opening volumes.
type plan struct {
	found        *devices.Found
	state        *volume   // nil: no STATE partition
	others       []*volume // EPHEMERAL and user volumes
	uuidOverride []byte    // META tag 15

	node devices.NodeDisk // the disk volumes come from (boot/devices SelectNode)

	// journal records formats in progress in META (tag 0xC2), so that one
	// cut short by a crash is redone on the next boot; nil without META.
	journal *meta.Journal
	metaDev BlockDevice // the open META partition the journal writes
}

// close releases what the plan holds open.
func (p *plan) close() {
	if p != nil && p.metaDev != nil {
		p.metaDev.Close()
	}
}

// DefaultMountPoint is where a volume goes in the new root when its config
// names no mountPoint (Talos's places).
func DefaultMountPoint(id string) string {
	switch {
	case id == config.StateVolume:
		return "/system/state"
	case id == config.EphemeralVolume:
		return "/var"
	case strings.HasPrefix(id, "u-"):
		return "/var/mnt/" + strings.TrimPrefix(id, "u-")
	}
	return "/var/mnt/" + id
}

func newVolume(id string, cfg *config.Volume, part devices.Block) *volume {
	v := &volume{ID: id, cfg: cfg, part: part, mountPoint: DefaultMountPoint(id), fs: mkfs.Default}
	if cfg != nil {
		if cfg.MountPoint != "" {
			v.mountPoint = cfg.MountPoint
		}
		if cfg.Filesystem != "" {
			v.fs = cfg.Filesystem
		}
	}
	return v
}

// isVolumeLabel reports whether a GPT label is a volume cryptinit handles.
func isVolumeLabel(l string) bool {
	return l == config.StateVolume || l == config.EphemeralVolume || strings.HasPrefix(l, "u-")
}

// discover waits for the partitions, reads META and decides STATE's config.
func (b *Boot) discover(ctx context.Context, mc *machineConfig) (*plan, error) {
	required := []string{config.StateVolume}
	if mc.cfg != nil {
		for _, v := range mc.cfg.Volumes {
			if v.ID != config.StateVolume {
				required = append(required, v.ID)
			}
		}
	}
	if l := devices.Label(b.Cmdline.Root); l != "" {
		required = append(required, l)
	}
	var found *devices.Found
	var sel *devices.Selection
	err := b.step("devices", "", func() error {
		var err error
		found, sel, err = b.waitNodeDisk(ctx, required, mc.cfg)
		return err
	})
	if err != nil {
		return nil, devicesFatal(err)
	}
	b.logSelection(sel)
	var labels []string
	for l, p := range found.ByLabel {
		labels = append(labels, l+"="+p.Name)
	}
	sort.Strings(labels)
	b.logf("devices: %s", strings.Join(labels, " "))
	for _, d := range found.Dups {
		b.logf("devices: warning: more than one partition is labelled %s; using %s", d, found.ByLabel[d].Name)
	}

	p := &plan{found: found, node: sel.Node}
	stateCfg, err := b.readMeta(found, mc, p)
	if err != nil {
		return nil, err
	}
	if part, ok := found.ByLabel[config.StateVolume]; ok {
		p.state = newVolume(config.StateVolume, stateCfg, part)
	}
	if mc.cfg != nil {
		if err := b.planFromConfig(ctx, mc, p); err != nil {
			return nil, err
		}
	}
	b.prefetchFS(p.fsTypes(b.Cmdline.RootFSType)...)
	return p, nil
}

// fsTypes lists the filesystem types the plan expects to mount: each
// volume's (what a fresh one is formatted with, which an existing one
// almost always holds) and root's, when rootfstype= names it.
func (p *plan) fsTypes(root string) []string {
	var types []string
	if p.state != nil {
		types = append(types, p.state.fs)
	}
	for _, v := range p.others {
		types = append(types, v.fs)
	}
	return append(types, root)
}

// readMeta consumes wipe requests, reads tag 15 and resolves STATE's
// encryption config (machine config first, else tag 9).
func (b *Boot) readMeta(found *devices.Found, mc *machineConfig, p *plan) (*config.Volume, error) {
	var stateCfg *config.Volume
	if mc.cfg != nil {
		stateCfg = mc.cfg.Volume(config.StateVolume)
	}
	part, ok := found.ByLabel["META"]
	if !ok {
		b.logf("meta: no META partition")
		return stateCfg, nil
	}
	err := b.step("meta", "", func() error {
		f, _, err := b.Open(part.Path)
		if err != nil {
			return fmt.Errorf("open META %s: %w", part.Path, err)
		}
		p.metaDev = f // kept open for the format journal; plan.close closes it
		m, readErr := meta.Read(f)
		if readErr == nil {
			if v, ok := m.Get(meta.TagUUIDOverride); ok && len(v) > 0 {
				p.uuidOverride = v
				b.logf("meta: node UUID override (tag 15) is set")
			}
		} else if !errors.Is(readErr, meta.ErrBlank) {
			b.logf("meta: unreadable, so no wipe request or node UUID override is taken from it: %v", readErr)
		}
		// Only volumes META asks to wipe are opened for it; consuming a
		// request rewrites META, which is then read again.
		ids := b.wipeRequested(m, readErr, found, mc)
		for _, id := range ids {
			if err := b.consumeWipe(f, id, found); err != nil {
				return err
			}
		}
		if len(ids) > 0 {
			m, readErr = meta.Read(f)
		}
		cfg := mc.cfg
		if cfg == nil {
			cfg = &config.Config{}
		}
		vol, src, err := meta.ResolveStateConfig(cfg, f, m, readErr)
		if err != nil {
			if vol == nil {
				return fmt.Errorf("STATE encryption config: %w", err)
			}
			b.logf("meta: %v", err)
		}
		switch {
		case readErr == nil && err == nil:
			p.journal = meta.NewJournal(f, m) // m is what is on disk
		case errors.Is(readErr, meta.ErrBlank):
			p.journal = meta.NewJournal(f, nil)
		default:
			// an unreadable META is not overwritten: no journal
		}
		if vol != nil {
			stateCfg = vol
			b.logf("meta: STATE encryption config from %s", src)
			if src == meta.SourceMachineConfig && !vol.Trust.Authenticated {
				b.logf("meta: tag 9 is left as it is: the machine config from %s is not authenticated", vol.Trust.Source)
			}
		}
		return nil
	})
	if err != nil {
		return nil, &Fatal{Failure: console.Failure{Volume: config.StateVolume, Device: part.Path, Reason: err,
			Hint: "META is damaged or unreadable: boot with a machine config that encrypts STATE (it wins over META and rewrites it)"}}
	}
	return stateCfg, nil
}

// planFromConfig adds EPHEMERAL and the user volumes: configured ones, and
// an unconfigured EPHEMERAL partition as a plain filesystem.
func (b *Boot) planFromConfig(ctx context.Context, mc *machineConfig, p *plan) error {
	seen := map[string]bool{}
	var missing []string
	if mc.cfg != nil {
		for i := range mc.cfg.Volumes {
			v := &mc.cfg.Volumes[i]
			if v.ID == config.StateVolume || seen[v.ID] {
				continue
			}
			seen[v.ID] = true
			if _, ok := p.found.ByLabel[v.ID]; !ok {
				missing = append(missing, v.ID)
			}
		}
	}
	if len(missing) > 0 {
		// Only a config read from STATE can name volumes not waited for yet.
		found, sel, err := b.waitNodeDisk(ctx, missing, mc.cfg)
		if err != nil {
			return devicesFatal(err)
		}
		if sel.Node != p.node {
			return devicesFatal(fmt.Errorf("the node's disk changed during the boot: %s (%s), then %s (%s)", p.node.Disk, p.node.Why, sel.Node.Disk, sel.Node.Why))
		}
		b.logSelection(sel)
		for _, l := range missing {
			p.found.ByLabel[l] = found.ByLabel[l]
		}
	}
	if mc.cfg != nil {
		for i := range mc.cfg.Volumes {
			v := &mc.cfg.Volumes[i]
			if v.ID == config.StateVolume || !seen[v.ID] {
				continue
			}
			delete(seen, v.ID)
			p.others = append(p.others, newVolume(v.ID, v, p.found.ByLabel[v.ID]))
		}
	}
	if mc.cfg == nil || mc.cfg.Volume(config.EphemeralVolume) == nil {
		if part, ok := p.found.ByLabel[config.EphemeralVolume]; ok {
			p.others = append([]*volume{newVolume(config.EphemeralVolume, nil, part)}, p.others...)
		}
	}
	return nil
}

func (b *Boot) stagingDir(id string) string {
	return b.path(filepath.Join(StagingDir, id))
}

func devicesFatal(err error) *Fatal {
	if f, ok := ambiguousFatal(err); ok {
		return f
	}
	if f, ok := espNotSeenFatal(err); ok {
		return f
	}
	f := &Fatal{Failure: console.Failure{Reason: err,
		Hint: "attach the disk and check its GPT partition names (STATE, EPHEMERAL, META, u-<name>); the disk driver module (e.g. virtio_blk) must be in the image; cryptinit.wait= waits longer"}}
	var nf *devices.NotFoundError
	if errors.As(err, &nf) && len(nf.Missing) == 1 {
		f.Failure.Volume = nf.Missing[0]
	}
	return f
}
