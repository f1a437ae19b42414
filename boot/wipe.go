package boot

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// wipeRequested lists, sorted, the found volumes META's wipe request
// (meta.TagWipeRequest) names, and warns about what it will not act on: a
// request it cannot read, a request for a volume with no partition, a
// request for a volume whose config is not authenticated (formatTrust:
// wiped, it could not be formatted again and the boot would stop), and
// cryptinit's old records in the users' tags 12 and 13 (meta.LegacyWarnings;
// those are only reported, never acted on or altered). Requests not acted
// on stay in META as they are.
func (b *Boot) wipeRequested(m *meta.Meta, readErr error, found *devices.Found, mc *machineConfig) []string {
	if readErr != nil {
		return nil
	}
	for _, w := range meta.LegacyWarnings(m) {
		b.logf("meta: warning: %s", w)
	}
	reqs, err := meta.WipeRequests(m)
	if err != nil {
		b.logf("meta: warning: %v; nothing is wiped (remove it with cryptctl meta delete --tag %d META-DEVICE and ask again)", err, meta.TagWipeRequest)
		return nil
	}
	var ids []string
	for _, r := range reqs {
		if _, ok := found.ByLabel[r.Volume]; !ok || !isVolumeLabel(r.Volume) {
			b.logf("meta: warning: META asks to wipe %s at %s, but no partition is labelled %s: not wiped; the request stays in META", r.Volume, r.Target(), r.Volume)
			continue
		}
		if trust := formatTrust(r.Volume, mc, m); !trust.Authenticated {
			b.logf("meta: warning: META asks to wipe %s at %s, but the config that would format it again (%s) is not authenticated: not wiped; the request stays in META. "+
				"Boot with a machine config in the signed image (embedded, or cryptinit.config=/path in the initramfs) to act on it, or withdraw it: cryptctl meta cancel-wipe --volume %s META",
				r.Volume, r.Target(), trust.Source, r.Volume)
			continue
		}
		ids = append(ids, r.Volume)
	}
	sort.Strings(ids)
	return ids
}

// formatTrust is the trust of the config that formats volume id once it is
// wiped. For STATE: the machine config's encrypted STATE, else META tag 9
// (never authenticated) when set, else the machine config, which leaves
// STATE plain. For the others: the machine config, which names them or
// leaves them plain; without one their config is STATE's copy, not read
// before STATE is open and not authenticated unless STATE proves genuine
// (stateCopyTrust): not authenticated here.
func formatTrust(id string, mc *machineConfig, m *meta.Meta) config.Trust {
	if id == config.StateVolume {
		if mc.cfg != nil {
			if v := mc.cfg.Volume(id); v != nil && v.Encrypted() {
				return v.Trust
			}
		}
		if _, ok := m.Get(meta.TagStateEncryptionConfig); ok {
			return config.Trust{Source: "STATE's config from META tag 9"}
		}
	}
	if mc.cfg != nil {
		return mc.trust
	}
	if id == config.StateVolume {
		return config.Trust{Source: "no machine config: STATE would be a plain filesystem"}
	}
	return config.Trust{Source: "no machine config: " + id + "'s would come from the copy on STATE"}
}

// consumeWipe acts on META's wipe request for volume id: it reads the
// partition's GPT partition GUID and hands the rest to
// unlock.ConsumeWipeRequest, which writes (META, then the partition) only
// when the request targets this partition. A request for another partition
// is a warning, not a failure: it stays in META and nothing is written.
func (b *Boot) consumeWipe(metaDev BlockDevice, id string, found *devices.Found) error {
	part := found.ByLabel[id]
	partUUID, uuidErr := b.partUUID(found, part)
	dev, size, err := b.Open(part.Path)
	if err != nil {
		return fmt.Errorf("open %s for a wipe request: %w", id, err)
	}
	defer dev.Close()
	wiped, err := unlock.ConsumeWipeRequest(metaDev, id, partUUID, dev, size)
	var mismatch *meta.WipeMismatchError
	if errors.As(err, &mismatch) {
		if uuidErr != nil {
			b.logf("meta: warning: %s (%s): %v (its PARTUUID could not be read: %v)", id, part.Name, err, uuidErr)
		} else {
			b.logf("meta: warning: %s (%s): %v", id, part.Name, err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if wiped != nil {
		if err := dev.Sync(); err != nil {
			return fmt.Errorf("wipe %s: %w", id, err)
		}
		b.logf("meta: wiped %s (%s), reason: wipe request in META for %s (cleared before the wipe); erased: %s; it will be formatted",
			id, part.Name, wiped.Request.Target(), wiped.Erased)
	}
	return nil
}

// partUUID reads a partition's GPT partition GUID from its disk's table
// (Linux puts none in the partition's uevent; devices.ReadGPT).
func (b *Boot) partUUID(found *devices.Found, part devices.Block) (string, error) {
	if part.Disk == "" || part.PartN == 0 {
		return "", fmt.Errorf("the disk holding %s is not known", part.Name)
	}
	var disk *devices.Block
	for i := range found.All {
		if found.All[i].Name == part.Disk {
			disk = &found.All[i]
		}
	}
	if disk == nil {
		return "", fmt.Errorf("disk %s of %s not found", part.Disk, part.Name)
	}
	d, _, err := b.Open(disk.Path)
	if err != nil {
		return "", fmt.Errorf("open disk %s: %w", disk.Path, err)
	}
	defer d.Close()
	entries, err := devices.ReadGPT(d)
	if err != nil {
		return "", fmt.Errorf("read the GPT of %s: %w", disk.Path, err)
	}
	for _, e := range entries {
		if e.Index == part.PartN {
			return e.PartUUID, nil
		}
	}
	return "", fmt.Errorf("the GPT of %s has no partition %d", disk.Path, part.PartN)
}
