package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// wipeTarget is the partition a wipe request would destroy, as read from
// its disk: what request-wipe shows the operator before it writes.
type wipeTarget struct {
	disk     string
	entry    devices.GPTEntry
	size     int64  // bytes
	luksUUID string // "" when the partition holds no LUKS header
	luksVer  int
	luksErr  error    // a LUKS header that cannot be read (damaged): still wipeable
	labels   []string // every partition label on the disk, in GPT order
}

// findWipeTarget reads disk's GPT and returns the one partition labelled
// volume, which must also have partUUID and hold a LUKS header with
// luksUUID when those are given. Anything else is an error that says what
// the disk has.
func findWipeTarget(disk, volume, partUUID, luksUUID string) (*wipeTarget, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := devices.ReadGPT(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", disk, err)
	}
	sector, err := gptSectorSize(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", disk, err)
	}
	t := &wipeTarget{disk: disk}
	var labelled []devices.GPTEntry
	for _, e := range entries {
		t.labels = append(t.labels, e.Name)
		if e.Name == volume {
			labelled = append(labelled, e)
		}
	}
	if len(labelled) == 0 {
		return nil, fmt.Errorf("%s has no partition labelled %s (its partitions: %s)%s", disk, volume, strings.Join(t.labels, ", "), labelHint(volume, t.labels))
	}
	if partUUID != "" {
		i := slices.IndexFunc(entries, func(e devices.GPTEntry) bool { return strings.EqualFold(e.PartUUID, partUUID) })
		switch {
		case i < 0:
			return nil, fmt.Errorf("--partuuid %s: no partition on %s has that GUID", partUUID, disk)
		case entries[i].Name != volume:
			return nil, fmt.Errorf("--partuuid %s is partition %d of %s, labelled %s, not %s", partUUID, entries[i].Index, disk, entries[i].Name, volume)
		}
		t.entry = entries[i]
	} else if len(labelled) > 1 {
		var ids []string
		for _, e := range labelled {
			ids = append(ids, e.PartUUID)
		}
		return nil, fmt.Errorf("%s: %d partitions are labelled %s: name one with --partuuid (%s)", disk, len(labelled), volume, strings.Join(ids, ", "))
	} else {
		t.entry = labelled[0]
	}
	t.size = int64(t.entry.LastLBA-t.entry.FirstLBA+1) * sector
	part := io.NewSectionReader(f, int64(t.entry.FirstLBA)*sector, t.size)
	if h, err := luks2.ReadHeader(part); err == nil {
		t.luksUUID, t.luksVer = strings.ToLower(h.UUID), h.Version
	} else if !errors.Is(err, luks2.ErrNotLUKS) {
		t.luksErr = err
	}
	if luksUUID != "" && !strings.EqualFold(luksUUID, t.luksUUID) {
		has := "no LUKS header"
		switch {
		case t.luksUUID != "":
			has = "LUKS UUID " + t.luksUUID
		case t.luksErr != nil:
			has = fmt.Sprintf("no readable LUKS header (%v): name it by --partuuid", t.luksErr)
		}
		return nil, fmt.Errorf("--luks-uuid %s, but partition %d of %s (%s) holds %s", luksUUID, t.entry.Index, disk, volume, has)
	}
	return t, nil
}

// gptLabels lists the partition labels in disk's GPT.
func gptLabels(disk string) ([]string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := devices.ReadGPT(f)
	if err != nil {
		return nil, err
	}
	var labels []string
	for _, e := range entries {
		labels = append(labels, e.Name)
	}
	return labels, nil
}

// gptSectorSize is the logical sector size the GPT header was found with.
func gptSectorSize(r io.ReaderAt) (int64, error) {
	sig := make([]byte, 8)
	for _, s := range []int64{512, 4096} {
		if _, err := r.ReadAt(sig, s); err == nil && string(sig) == "EFI PART" {
			return s, nil
		}
	}
	return 0, devices.ErrNoGPT
}

// labelHint suggests a label the operator may have meant: the volume ID in
// another case, or a user volume without its u- prefix.
func labelHint(volume string, labels []string) string {
	for _, l := range labels {
		if strings.EqualFold(l, volume) || l == "u-"+volume {
			return "; did you mean " + l + "?"
		}
	}
	return ""
}

// describe says what a wipe of t destroys.
func (t *wipeTarget) describe(volume string) string {
	luks := "no LUKS header (unencrypted data)"
	switch {
	case t.luksUUID != "":
		luks = fmt.Sprintf("LUKS%d UUID %s", t.luksVer, t.luksUUID)
	case t.luksErr != nil:
		luks = fmt.Sprintf("a LUKS header that cannot be read (%v)", t.luksErr)
	}
	return fmt.Sprintf("partition %d of %s, labelled %s, PARTUUID %s, %s (%d bytes), %s",
		t.entry.Index, t.disk, volume, t.entry.PartUUID, humanSize(t.size), t.size, luks)
}

// lockedCandidates are the volumes on t's disk that a lockToSTATE key may
// tie to STATE's salt: EPHEMERAL and the user volumes.
func (t *wipeTarget) lockedCandidates() []string {
	var out []string
	for _, l := range t.labels {
		if l != "STATE" && meta.IsVolumeID(l) {
			out = append(out, l)
		}
	}
	return out
}

// humanSize prints n bytes in binary units, as lsblk does.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
