package boot

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// wipeRequested lists, sorted, the found volumes META's wipe request
// (meta.TagWipeRequest) names, and warns about what it will not act on: a
// request it cannot read, a request for a volume with no partition, and
// cryptinit's old records in the users' tags 12 and 13 (meta.LegacyWarnings;
// those are only reported, never acted on or altered).
func (b *Boot) wipeRequested(m *meta.Meta, readErr error, found *devices.Found) []string {
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
		ids = append(ids, r.Volume)
	}
	sort.Strings(ids)
	return ids
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
