package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/config"
)

// The node's own disk (boot/devices SelectNode): system volumes, and user
// volumes whose config names no disk, come from it only. A partition with
// the same label on another disk (a USB stick) is logged and never opened
// nor formatted.

// loaderPartUUID reads the partition GUID of the ESP the UKI booted from
// (LoaderDevicePartUUID); "" when unknown. On a UEFI boot it waits for
// efivarfs, a module that loads first in the background.
func (b *Boot) loaderPartUUID(ctx context.Context) string {
	if _, err := os.Stat(b.path("/sys/firmware/efi")); err != nil {
		return "" // not booted through UEFI
	}
	b.awaitModules(ctx, stageEarlyMounts, "")
	id, err := devices.ReadLoaderDevicePartUUID(b.path(tpm.EFIVarsPath))
	if err != nil {
		b.logf("devices: %v; the node's disk is the one holding META", err)
		return ""
	}
	return id
}

// anyDiskVolumes names the user volumes whose config names their disk
// (Talos's provisioning.diskSelector): they may sit on another disk.
func anyDiskVolumes(cfg *config.Config) map[string]bool {
	out := map[string]bool{}
	if cfg == nil {
		return out
	}
	for _, v := range cfg.Volumes {
		if v.DiskSelector != "" {
			out[v.ID] = true
		}
	}
	return out
}

// nodeDiskPoll is how often waitNodeDisk looks again for labels not yet on
// the node's disk.
const nodeDiskPoll = 50 * time.Millisecond

// waitNodeDisk waits (up to cryptinit.wait=) until every label in
// required is on the node's disk, then makes found hold the node's
// partitions for every volume label and logs what it ignored. A label on
// another disk does not end the wait: the node's disk may be slower. Nor
// does a LoaderDevicePartUUID no partition seen has: the disk the UKI
// booted from may be slower than a stick; at the deadline that is a
// *devices.ESPNotSeenError, never a guess.
func (b *Boot) waitNodeDisk(ctx context.Context, required []string, cfg *config.Config) (*devices.Found, *devices.Selection, error) {
	start := time.Now()
	deadline := start.Add(b.Cmdline.Wait)
	anyDisk := anyDiskVolumes(cfg)
	loader, loaderRead := "", false
	for {
		found, err := b.Devices.Wait(ctx, required, max(time.Until(deadline), 0))
		if err != nil {
			return found, nil, err
		}
		if !loaderRead {
			loader, loaderRead = b.loaderPartUUID(ctx), true
		}
		sel, err := devices.SelectNode(found, loader, anyDisk)
		var notSeen *devices.ESPNotSeenError
		switch {
		case errors.As(err, &notSeen) && (!time.Now().Before(deadline) || ctx.Err() != nil):
			notSeen.Waited = time.Since(start)
			return found, nil, notSeen
		case errors.As(err, &notSeen):
			select {
			case <-ctx.Done():
			case <-time.After(nodeDiskPoll):
			}
			continue
		case err != nil:
			return found, nil, err
		}
		var missing []string
		for _, l := range required {
			if _, ok := sel.ByLabel[l]; !ok && devices.IsVolumeLabel(l) {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 {
			found.Apply(sel)
			return found, sel, nil
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			nf := &devices.NotFoundError{Missing: missing, Waited: time.Since(start), Seen: found.All}
			if sel.Node.Known {
				nf.Node = fmt.Sprintf("%s (%s)", sel.Node.Disk, sel.Node.Why)
			}
			return found, sel, nf
		}
		select {
		case <-ctx.Done():
		case <-time.After(nodeDiskPoll):
		}
	}
}

// logSelection says which disk is the node's and every partition ignored.
func (b *Boot) logSelection(sel *devices.Selection) {
	for _, n := range sel.Notes {
		b.logf("devices: %s", n)
	}
	if sel.Node.Known {
		b.logf("devices: the node's disk is %s: %s", sel.Node.Disk, sel.Node.Why)
	}
	for _, p := range sel.Ignored {
		b.logf("devices: ignoring %s (label %s) on disk %s: not the node's disk; never opened nor formatted", p.Path, p.Label, p.Disk)
	}
}

// espNotSeenFatal is the banner for a disk the firmware booted from that
// never appeared.
func espNotSeenFatal(err error) (*Fatal, bool) {
	var ns *devices.ESPNotSeenError
	if !errors.As(err, &ns) {
		return nil, false
	}
	return &Fatal{Failure: console.Failure{Reason: err,
		Hint: "the firmware booted the UKI from partition " + ns.GUID + ", but its disk did not appear, so the boot\n" +
			"will not guess which disk is the node's (a disk that did appear may be a stick carrying planted\n" +
			"partitions). Check the disk driver module (e.g. nvme, virtio_blk) is in the image and the disk is\n" +
			"attached; cryptinit.wait= waits longer."}}, true
}

// ambiguousFatal is the banner for partitions or disks the boot cannot
// tell apart; it lists every candidate.
func ambiguousFatal(err error) (*Fatal, bool) {
	var amb *devices.AmbiguousError
	if !errors.As(err, &amb) {
		return nil, false
	}
	f := &Fatal{Failure: console.Failure{Volume: amb.Label, Reason: err,
		Hint: "the boot will not guess which partition is the node's. Rename (sgdisk --change-name) or remove the\n" +
			"partitions that are not the node's, or detach the disk that carries them. Candidates:\n" + candidateLines(amb)}}
	if amb.Label != "" {
		f.Failure.Device = fmt.Sprintf("%d candidates", len(amb.Candidates))
	}
	return f, true
}

func candidateLines(amb *devices.AmbiguousError) string {
	var lines []string
	for _, c := range amb.Candidates {
		lines = append(lines, "  "+c.String())
	}
	return strings.Join(lines, "\n")
}

// configSourceDevice resolves the device of a cryptinit.config= source. A
// PARTLABEL= is looked for on the node's disk and the ESP the UKI booted
// from only (devices.ConfigSourceByLabel), once STATE is there too;
// PARTUUID= and UUID= name one partition wherever it is.
func (b *Boot) configSourceDevice(ctx context.Context, spec string, found *devices.Found) (string, error) {
	l := devices.Label(spec)
	if l == "" {
		return devices.ResolveWait(ctx, spec, found, b.Cmdline.Wait)
	}
	// Which disk is the node's is known once its partitions are there:
	// wait for STATE too (discover waits for it anyway), and for the ESP
	// the UKI booted from, so that a stick seen before the node's disk is
	// not the only candidate.
	deadline := time.Now().Add(b.Cmdline.Wait)
	loader := b.loaderPartUUID(ctx)
	for {
		if more, err := b.Devices.Wait(ctx, []string{l, config.StateVolume}, max(time.Until(deadline), 0)); err == nil {
			found = more
		}
		part, err := devices.ConfigSourceByLabel(found, l, loader)
		var notSeen *devices.ESPNotSeenError
		if errors.As(err, &notSeen) && time.Now().Before(deadline) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(nodeDiskPoll):
			}
			continue
		}
		if err != nil {
			return "", err
		}
		if err := found.EnsureNode(part); err != nil {
			return "", err
		}
		return part.Path, nil
	}
}
