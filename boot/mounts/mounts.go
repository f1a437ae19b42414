// Package mounts makes the mounts an initramfs needs (proc, sysfs,
// devtmpfs, /run, efivarfs, securityfs), mounts volumes at a staging place,
// and moves them into the new root, parents before children.
package mounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Mounter is the mount(2) and umount(2) system calls; tests record them.
type Mounter interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	Unmount(target string) error
}

// System is the real Mounter.
type System struct{}

// Mount implements Mounter.
func (System) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

// Unmount implements Mounter.
func (System) Unmount(target string) error { return unix.Unmount(target, 0) }

// Point is one mount.
type Point struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	// IfExists mounts only when this path exists (e.g. /sys/firmware/efi for
	// efivarfs), checked after the mounts before it.
	IfExists string
	// Optional failures are reported but do not stop the boot.
	Optional bool
}

// Early lists the mounts made before anything else, in order.
func Early() []Point {
	const nosuidNodevNoexec = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []Point{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuidNodevNoexec},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuidNodevNoexec},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755"},
		{Source: "efivarfs", Target: "/sys/firmware/efi/efivars", FSType: "efivarfs", Flags: nosuidNodevNoexec,
			IfExists: "/sys/firmware/efi/efivars", Optional: true},
		{Source: "securityfs", Target: "/sys/kernel/security", FSType: "securityfs", Flags: nosuidNodevNoexec,
			IfExists: "/sys/kernel/security", Optional: true},
	}
}

// Result says what happened to one Point.
type Result struct {
	Point   Point
	Skipped bool // IfExists was absent
	Err     error
}

// MountAll mounts points in order under root ("" or "/" for the real
// system), creating targets. A target already mounted (EBUSY) counts as
// done. It stops at the first failure of a point that is not Optional.
func MountAll(m Mounter, root string, points []Point) ([]Result, error) {
	var res []Result
	for _, p := range points {
		if p.IfExists != "" {
			if _, err := os.Stat(filepath.Join(root, p.IfExists)); err != nil {
				res = append(res, Result{Point: p, Skipped: true})
				continue
			}
		}
		target := filepath.Join(root, p.Target)
		err := os.MkdirAll(target, 0o755)
		if err == nil {
			err = m.Mount(p.Source, target, p.FSType, p.Flags, p.Data)
			if errors.Is(err, unix.EBUSY) {
				err = nil
			}
		}
		if err != nil {
			err = fmt.Errorf("mount %s on %s: %w", p.FSType, p.Target, err)
		}
		res = append(res, Result{Point: p, Err: err})
		if err != nil && !p.Optional {
			return res, err
		}
	}
	return res, nil
}

// Move is a mount to move into the new root: from its staging directory
// to Target, a path inside the new root.
type Move struct {
	From   string // staging mount point
	Target string // absolute path as seen from the new root, e.g. /var
}

// MoveInto moves the staged mounts into newRoot, shallowest target first so
// that /var is in place before /var/mnt/data is created inside it. A
// missing target directory is created; on a read-only root that fails with
// an error naming the directory.
func MoveInto(m Mounter, newRoot string, moves []Move) error {
	sorted := append([]Move(nil), moves...)
	sort.SliceStable(sorted, func(i, j int) bool { return depth(sorted[i].Target) < depth(sorted[j].Target) })
	for _, mv := range sorted {
		dst := filepath.Join(newRoot, mv.Target)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("mount point %s in the new root: %w (create it in the root filesystem, or pick another mountPoint)", mv.Target, err)
		}
		if err := m.Mount(mv.From, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", mv.From, mv.Target, err)
		}
	}
	return nil
}

func depth(p string) int {
	return strings.Count(filepath.Clean("/"+p), "/")
}
