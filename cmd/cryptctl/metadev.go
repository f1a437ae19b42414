package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// devView is how cryptctl sees block devices: the sysfs and /dev trees it
// reads and how it stats a path. hostDevView is the machine's; tests use a
// fake sysfs and a stat that calls an image file a partition.
type devView struct {
	sys, dev string
	// stat gives a path's device number when it is a block device.
	stat func(path string) (major, minor uint32, block bool, err error)
}

func hostDevView() devView { return devView{sys: "/sys", dev: "/dev", stat: statBlock} }

// statBlock stats path; block is false for anything but a block device.
func statBlock(path string) (major, minor uint32, block bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, false, nil
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), true, nil
}

// diskOfPartition returns the disk (/dev/<name>) that holds the partition
// block device path, through sysfs.
func (v devView) diskOfPartition(path string) (string, error) {
	major, minor, block, err := v.stat(path)
	if err != nil {
		return "", err
	}
	if !block {
		return "", fmt.Errorf("%s is not a block device", path)
	}
	return diskOfDev(v.sys, v.dev, major, minor)
}

// partName is the GPT partition name of block device major:minor, from
// PARTNAME in its sysfs uevent; an error when it has none.
func (v devView) partName(major, minor uint32) (string, error) {
	f, err := os.Open(filepath.Join(v.sys, "dev/block", fmt.Sprintf("%d:%d", major, minor), "uevent"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, ok := strings.CutPrefix(s.Text(), "PARTNAME="); ok {
			return name, nil
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", errors.New("its uevent has no PARTNAME (not a GPT partition with a name)")
}

// checkMETAPartition refuses a block device at path that is not the
// partition labelled META: a mistyped /dev/sda4 (a fresh EPHEMERAL, all
// zeros) would otherwise get a META signature, and the boot then refuses to
// format it. A path that is not a block device (an image file) passes with
// part false.
func (v devView) checkMETAPartition(path string) (part bool, err error) {
	major, minor, block, err := v.stat(path)
	if err != nil || !block {
		return false, err
	}
	name, err := v.partName(major, minor)
	if err != nil {
		return true, fmt.Errorf("%s: cannot read its GPT partition name from sysfs (%v): cryptctl writes META only to the partition labelled META; nothing was written", path, err)
	}
	if name != "META" {
		return true, fmt.Errorf("%s is the partition labelled %s, not META: cryptctl writes META only to the partition labelled META; nothing was written", path, name)
	}
	return true, nil
}

// wipeDisk is the disk whose GPT a wipe request for volume is checked
// against: --disk (disk), or the disk holding META when metaPath is a
// partition. When META is a partition and --disk is given, they must be
// the same disk: the boot acts on a request only for its own disk.
func (v devView) wipeDisk(metaPath, disk, volume string) (string, error) {
	held, err := v.diskOfPartition(metaPath)
	switch {
	case disk == "" && err != nil:
		return "", fmt.Errorf("name the partition to wipe on its disk: give --disk DISK (the disk or whole-disk image holding %s), whose GPT is checked for it (%v)", volume, err)
	case disk == "":
		return held, nil
	case err != nil:
		return disk, nil // META is an image: --disk names the disk
	}
	a, aerr := os.Stat(disk)
	b, berr := os.Stat(held)
	if aerr != nil || berr != nil || !os.SameFile(a, b) {
		return "", fmt.Errorf("--disk %s is not %s, the disk holding META %s: the boot acts only on volumes on the disk of its META; leave out --disk or give --disk %s (nothing was written)", disk, held, metaPath, held)
	}
	return disk, nil
}
