package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Nodes finds mappings in sysfs and makes their /dev/mapper nodes.
type Nodes struct {
	Sys   string // "/sys"
	Dev   string // "/dev"
	Mknod func(path string, mode uint32, dev int) error
}

// SystemNodes is Nodes for the running system.
func SystemNodes() Nodes { return Nodes{Sys: "/sys", Dev: "/dev", Mknod: unix.Mknod} }

// ErrNoMapping: sysfs shows no dm device with that name.
var ErrNoMapping = errors.New("no device-mapper device with that name in sysfs")

// Find returns the kernel name (dm-N) and numbers of the mapping called name.
func (n Nodes) Find(name string) (kname string, major, minor uint32, err error) {
	matches, _ := filepath.Glob(filepath.Join(n.Sys, "block", "dm-*", "dm", "name"))
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		dir := filepath.Dir(filepath.Dir(m))
		dev, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			return "", 0, 0, fmt.Errorf("mapping %s: %w", name, err)
		}
		ma, mi, ok := strings.Cut(strings.TrimSpace(string(dev)), ":")
		a, err1 := strconv.ParseUint(ma, 10, 32)
		b2, err2 := strconv.ParseUint(mi, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return "", 0, 0, fmt.Errorf("mapping %s: bad dev %q", name, dev)
		}
		return filepath.Base(dir), uint32(a), uint32(b2), nil
	}
	return "", 0, 0, fmt.Errorf("mapping %s: %w", name, ErrNoMapping)
}

// MakeNode creates /dev/mapper/<name> for an existing mapping (replacing a
// stale node) and returns its path.
func (n Nodes) MakeNode(name string) (string, error) {
	_, major, minor, err := n.Find(name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(n.Dev, "mapper", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(uint64(st.Rdev)) == major && unix.Minor(uint64(st.Rdev)) == minor {
			return path, nil
		}
		os.Remove(path)
	}
	if err := n.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))); err != nil {
		return "", fmt.Errorf("mknod %s (%d:%d): %w", path, major, minor, err)
	}
	return path, nil
}

// RemoveNode removes /dev/mapper/<name> (there is no udev to do it); a node
// already gone is no error.
func (n Nodes) RemoveNode(name string) error {
	err := os.Remove(filepath.Join(n.Dev, "mapper", name))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the node of mapping %s: %w", name, err)
	}
	return nil
}
