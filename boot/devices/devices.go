// Package devices finds block devices by GPT partition label without udev:
// the kernel puts PARTNAME= in /sys/class/block/<dev>/uevent, and devtmpfs
// normally creates /dev/<dev>; when it did not, the node is made here from
// MAJOR/MINOR.
package devices

import (
	"context"
	"errors"
	"fmt"
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
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
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
}

func (e *NotFoundError) Error() string {
	var seen []string
	for _, b := range e.Seen {
		seen = append(seen, b.String())
	}
	if len(seen) == 0 {
		seen = []string{"no block devices at all (disk driver module missing?)"}
	}
	return fmt.Sprintf("partition label %s not found after %s; block devices seen: %s",
		strings.Join(e.Missing, ", "), e.Waited.Round(time.Millisecond), strings.Join(seen, "; "))
}

// Found maps labels to partitions. Dups lists labels carried by more than one
// partition (the first by kernel name is used).
type Found struct {
	ByLabel map[string]Block
	Dups    []string
	All     []Block
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

// Resolve turns a device spec (/dev/xxx, PARTLABEL=x) into a block device
// path, using found for labels.
func Resolve(spec string, found *Found) (string, error) {
	switch {
	case strings.HasPrefix(spec, "PARTLABEL="):
		l := strings.TrimPrefix(spec, "PARTLABEL=")
		if found != nil {
			if b, ok := found.ByLabel[l]; ok {
				return b.Path, nil
			}
		}
		return "", fmt.Errorf("%s: no partition with that label", spec)
	case strings.HasPrefix(spec, "/dev/"):
		return spec, nil
	}
	return "", fmt.Errorf("%s: unsupported device spec (use /dev/NAME or PARTLABEL=NAME)", spec)
}

// Label returns the label a spec waits for, or "" for a /dev path.
func Label(spec string) string {
	if l, ok := strings.CutPrefix(spec, "PARTLABEL="); ok {
		return l
	}
	return ""
}
