// Package devices finds block devices by GPT partition label without udev:
// the kernel puts PARTNAME= in /sys/class/block/<dev>/uevent, and devtmpfs
// normally creates /dev/<dev>; when it did not, the node is made here from
// MAJOR/MINOR. Partition GUIDs (PARTUUID=) and filesystem UUIDs (UUID=)
// are read from the disks themselves (uuid.go).
package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Block is one block device or partition as sysfs describes it.
type Block struct {
	Name     string // kernel name, e.g. vda2
	Label    string // GPT partition name (PARTNAME), empty for whole disks
	PartN    int    // partition number (PARTN), 0 for whole disks
	Disk     string // kernel name of the disk holding a partition, e.g. vda
	Major    uint32
	Minor    uint32
	DevType  string // "disk" or "partition"
	Path     string // /dev/<Name>
	SizeByte int64  // from sysfs size (512-byte sectors)
}

func (b Block) String() string {
	if b.Label == "" {
		return fmt.Sprintf("%s (%d:%d, %s)", b.Name, b.Major, b.Minor, b.DevType)
	}
	return fmt.Sprintf("%s (%d:%d, label %s)", b.Name, b.Major, b.Minor, b.Label)
}

// Finder looks up block devices in a sysfs tree and a /dev directory; both
// are roots so tests run on temporary directories.
type Finder struct {
	Sys   string        // sysfs mount, "/sys"
	Dev   string        // devtmpfs mount, "/dev"
	Poll  time.Duration // wait between scans; 0: 50ms
	Mknod func(path string, mode uint32, dev int) error
}

// NewFinder is the Finder for the running system.
func NewFinder() *Finder {
	return &Finder{Sys: "/sys", Dev: "/dev", Mknod: unix.Mknod}
}

// Scan reads every block device in sysfs.
func (f *Finder) Scan() ([]Block, error) {
	dir := filepath.Join(f.Sys, "class", "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("scan block devices: %w", err)
	}
	var out []Block
	for _, e := range ents {
		b, err := f.read(e.Name())
		if err != nil {
			continue // vanished or unreadable: the next scan sees it again
		}
		out = append(out, b)
	}
	f.linkDisks(out)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// linkDisks names each partition's disk: sysfs keeps a partition's
// directory inside its disk's (block/vda/vda2).
func (f *Finder) linkDisks(all []Block) {
	for i := range all {
		if all[i].DevType != "partition" {
			continue
		}
		for _, d := range all {
			if d.DevType != "disk" {
				continue
			}
			if _, err := os.Stat(filepath.Join(f.Sys, "class", "block", d.Name, all[i].Name)); err == nil {
				all[i].Disk = d.Name
				break
			}
		}
	}
}

func (f *Finder) read(name string) (Block, error) {
	base := filepath.Join(f.Sys, "class", "block", name)
	data, err := os.ReadFile(filepath.Join(base, "uevent"))
	if err != nil {
		return Block{}, err
	}
	b := Block{Name: name}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "MAJOR":
			n, _ := strconv.ParseUint(v, 10, 32)
			b.Major = uint32(n)
		case "MINOR":
			n, _ := strconv.ParseUint(v, 10, 32)
			b.Minor = uint32(n)
		case "DEVNAME":
			b.Name = v
		case "DEVTYPE":
			b.DevType = v
		case "PARTNAME":
			b.Label = v
		case "PARTN":
			b.PartN, _ = strconv.Atoi(v)
		}
	}
	if s, err := os.ReadFile(filepath.Join(base, "size")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(s)), 10, 64)
		b.SizeByte = n * 512
	}
	b.Path = filepath.Join(f.Dev, b.Name)
	return b, nil
}

// EnsureNode creates the /dev node of b when devtmpfs has not (yet).
func (f *Finder) EnsureNode(b Block) error {
	if _, err := os.Stat(b.Path); err == nil {
		return nil
	}
	if f.Mknod == nil {
		return fmt.Errorf("%s: no device node and no mknod", b.Path)
	}
	if err := os.MkdirAll(filepath.Dir(b.Path), 0o755); err != nil {
		return err
	}
	err := f.Mknod(b.Path, unix.S_IFBLK|0o600, int(unix.Mkdev(b.Major, b.Minor)))
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("mknod %s (%d:%d): %w", b.Path, b.Major, b.Minor, err)
	}
	return nil
}

// NotFoundError says which labels never appeared and what was there instead.
type NotFoundError struct {
	Missing []string
	Waited  time.Duration
	Seen    []Block
	// Node, when set, says the labels were looked for on the node's disk
	// only, and which that is ("vdb (it holds META)").
	Node string
}

func (e *NotFoundError) Error() string {
	var seen []string
	for _, b := range e.Seen {
		seen = append(seen, b.String())
	}
	if len(seen) == 0 {
		seen = []string{"no block devices at all (disk driver module missing?)"}
	}
	where := ""
	if e.Node != "" {
		where = " on the node's disk " + e.Node
	}
	return fmt.Sprintf("partition label %s not found%s after %s; block devices seen: %s",
		strings.Join(e.Missing, ", "), where, e.Waited.Round(time.Millisecond), strings.Join(seen, "; "))
}

// Found maps labels to partitions. Dups lists labels carried by more than one
// partition (the first by kernel name is used).
type Found struct {
	ByLabel map[string]Block
	Dups    []string
	All     []Block

	finder *Finder // rescans for Resolve; nil when made by hand (tests)
}

// Wait scans until every label in required is present, or timeout passes.
// It always returns what it found (also for labels not required), with a
// *NotFoundError when some required label is missing. Device nodes of the
// found partitions exist on success.
func (f *Finder) Wait(ctx context.Context, required []string, timeout time.Duration) (*Found, error) {
	poll := f.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		all, err := f.Scan()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		found := index(all)
		found.finder = f
		var missing []string
		for _, l := range required {
			if _, ok := found.ByLabel[l]; !ok {
				missing = append(missing, l)
			}
		}
		if len(missing) == 0 {
			for _, b := range found.ByLabel {
				if err := f.EnsureNode(b); err != nil {
					return found, err
				}
			}
			return found, nil
		}
		if !time.Now().Before(deadline) {
			return found, &NotFoundError{Missing: missing, Waited: time.Since(start), Seen: all}
		}
		select {
		case <-ctx.Done():
			return found, &NotFoundError{Missing: missing, Waited: time.Since(start), Seen: all}
		case <-time.After(poll):
		}
	}
}

func index(all []Block) *Found {
	f := &Found{ByLabel: map[string]Block{}, All: all}
	for _, b := range all {
		if b.Label == "" {
			continue
		}
		if _, dup := f.ByLabel[b.Label]; dup {
			f.Dups = append(f.Dups, b.Label)
			continue
		}
		f.ByLabel[b.Label] = b
	}
	return f
}

// Resolve turns a device spec into a block device path: /dev/xxx as it
// is, PARTLABEL=x through found (a label on more than one partition is an
// error, except a volume label, which found holds for the node's disk
// only), PARTUUID=x (GPT partition GUID) and UUID=x (ext2/3/4, xfs or FAT
// filesystem UUID) by reading the disks, any case.
// found's devices are scanned again first when it came from Wait, so a
// disk that appeared since is seen. A GUID or UUID on more than one device
// is an error (cloned disks): cryptinit will not guess which to boot.
func Resolve(spec string, found *Found) (string, error) {
	switch {
	case strings.HasPrefix(spec, "PARTLABEL="):
		l := strings.TrimPrefix(spec, "PARTLABEL=")
		if found != nil {
			if b, ok := found.ByLabel[l]; ok {
				if err := found.unique(l); err != nil {
					return "", fmt.Errorf("%s: %w", spec, err)
				}
				return b.Path, nil
			}
		}
		return "", fmt.Errorf("%s: no partition with that label", spec)
	case strings.HasPrefix(spec, "/dev/"):
		return spec, nil
	case strings.HasPrefix(spec, "PARTUUID="):
		return found.resolveBy(spec, "partition GUID", partUUIDs)
	case strings.HasPrefix(spec, "UUID="):
		return found.resolveBy(spec, "filesystem UUID", fsUUIDs)
	}
	return "", fmt.Errorf("%s: unsupported device spec (use /dev/NAME, PARTLABEL=NAME, PARTUUID=GUID or UUID=UUID)", spec)
}

// unique refuses a label, other than a volume label, that more than one
// partition carries: a stick can carry ROOT as well as the node's disk.
func (fd *Found) unique(label string) error {
	if IsVolumeLabel(label) {
		return nil
	}
	var names []string
	for _, b := range fd.labelled() {
		if b.Label == label {
			names = append(names, b.Name)
		}
	}
	if len(names) > 1 {
		return fmt.Errorf("%d partitions are labelled %s (%s): use PARTUUID= to name one", len(names), label, strings.Join(names, ", "))
	}
	return nil
}

// ErrNoMatch: no device (yet) has the PARTUUID= or UUID= that Resolve was
// asked for; one may still appear.
var ErrNoMatch = errors.New("no device has that")

// ResolveWait is Resolve for a spec whose device may not be there yet
// (root=, cryptinit.config=): a PARTUUID= or UUID= that no device has is
// looked for again until timeout has passed. Unlike a PARTLABEL=, which
// Wait can wait for, only resolving tells which disk holds it.
func ResolveWait(ctx context.Context, spec string, found *Found, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		dev, err := Resolve(spec, found)
		if err == nil || !errors.Is(err, ErrNoMatch) {
			return dev, err
		}
		if !time.Now().Before(deadline) {
			return "", fmt.Errorf("%w (waited %s, cryptinit.wait=)", err, timeout)
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// idOf is one identifier found on a block device, for Resolve.
type idOf struct {
	block Block
	id    string // lower case
	note  string // how it shows in the "seen" list
}

// resolveBy finds the one block whose identifier (listed by ids) equals
// the spec's value, or says what it saw.
func (fd *Found) resolveBy(spec, what string, ids func([]Block) ([]idOf, []string)) (string, error) {
	_, val, _ := strings.Cut(spec, "=")
	want := normID(val)
	if want == "" {
		return "", fmt.Errorf("%s: empty %s", spec, what)
	}
	var blocks []Block
	var finder *Finder
	if fd != nil {
		blocks, finder = fd.All, fd.finder
	}
	if finder != nil {
		if all, err := finder.Scan(); err == nil {
			blocks = all
		}
	}
	found, seen := ids(blocks)
	var match []Block
	for _, f := range found {
		seen = append(seen, f.note)
		if f.id == want {
			match = append(match, f.block)
		}
	}
	switch len(match) {
	case 1:
		if finder != nil {
			if err := finder.EnsureNode(match[0]); err != nil {
				return "", fmt.Errorf("%s: %w", spec, err)
			}
		}
		return match[0].Path, nil
	case 0:
		if len(seen) == 0 {
			seen = []string{"no block devices"}
		}
		return "", fmt.Errorf("%s: %w %s; seen: %s", spec, ErrNoMatch, what, strings.Join(seen, ", "))
	}
	var names []string
	for _, b := range match {
		names = append(names, b.Name)
	}
	return "", fmt.Errorf("%s: %s found on %d devices (%s): cloned disks? use PARTLABEL= or /dev/ instead", spec, what, len(match), strings.Join(names, ", "))
}

// partUUIDs reads the GPT of every disk and names each partition's GUID;
// problems reading a disk go to the "seen" notes.
func partUUIDs(blocks []Block) ([]idOf, []string) {
	var out []idOf
	var notes []string
	for _, d := range blocks {
		if d.DevType != "disk" || d.SizeByte == 0 {
			continue
		}
		entries, err := readWith(d.Path, ReadGPT)
		if errors.Is(err, ErrNoGPT) {
			continue
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s (GPT unreadable: %v)", d.Name, err))
			continue
		}
		for _, e := range entries {
			p, ok := partition(blocks, d.Name, e.Index)
			if !ok {
				notes = append(notes, fmt.Sprintf("%s partition %d PARTUUID=%s (not known to the kernel)", d.Name, e.Index, e.PartUUID))
				continue
			}
			out = append(out, idOf{block: p, id: e.PartUUID, note: fmt.Sprintf("%s PARTUUID=%s", p.Name, e.PartUUID)})
		}
	}
	return out, notes
}

// fsUUIDs reads the filesystem UUID of every block device.
func fsUUIDs(blocks []Block) ([]idOf, []string) {
	var out []idOf
	var notes []string
	for _, b := range blocks {
		if b.SizeByte == 0 {
			continue // empty loop, ram or removable device
		}
		id, err := readWith(b.Path, func(r io.ReaderAt) (FSID, error) {
			id, ok, err := FSUUID(r)
			if err == nil && !ok {
				return id, errNoFS
			}
			return id, err
		})
		switch {
		case errors.Is(err, errNoFS):
		case err != nil:
			notes = append(notes, fmt.Sprintf("%s (unreadable: %v)", b.Name, err))
		default:
			out = append(out, idOf{block: b, id: id.UUID, note: fmt.Sprintf("%s %s UUID=%s", b.Name, id.Type, id.UUID)})
		}
	}
	return out, notes
}

var errNoFS = errors.New("no ext4, xfs or FAT filesystem")

func readWith[T any](path string, read func(io.ReaderAt) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return read(f)
}

func partition(blocks []Block, disk string, n int) (Block, bool) {
	for _, b := range blocks {
		if b.DevType == "partition" && b.Disk == disk && b.PartN == n {
			return b, true
		}
	}
	return Block{}, false
}

// Label returns the label a spec waits for, or "" for a /dev path.
func Label(spec string) string {
	if l, ok := strings.CutPrefix(spec, "PARTLABEL="); ok {
		return l
	}
	return ""
}
