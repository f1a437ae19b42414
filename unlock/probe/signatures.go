package probe

import "encoding/binary"

// A matcher reports the signatures of one family.
type matcher func(d *disk) []Signature

var matchers = []matcher{
	luks, xfs, ext, btrfs, vfat, swap, lvm2, zfs, squashfs, iso9660, bcache, mdraid, others,
}

func one(name string, off int64) []Signature { return []Signature{{Name: name, Offset: off}} }

// luks: "LUKS\xba\xbe" + big-endian version at 0; LUKS2's secondary header
// ("SKUL\xba\xbe") at the offsets cryptsetup allows, found even when the
// primary is gone.
func luks(d *disk) []Signature {
	if d.has(0, "LUKS\xba\xbe") {
		v := d.at(6, 2)
		switch binary.BigEndian.Uint16(v) {
		case 1:
			return one("LUKS1", 0)
		case 2:
			return one("LUKS2", 0)
		default:
			return one("LUKS (unknown version)", 0)
		}
	}
	for off := int64(16 << 10); off <= 4<<20; off *= 2 {
		if d.has(off, "SKUL\xba\xbe") {
			return one("LUKS2 (secondary header)", off)
		}
	}
	return nil
}

func xfs(d *disk) []Signature {
	if d.has(0, "XFSB") {
		return one("xfs", 0)
	}
	return nil
}

// ext: magic 0xEF53 at 1080 (superblock at 1024, s_magic at 56); the
// version comes from the feature flags.
func ext(d *disk) []Signature {
	if m, ok := d.le16(1080); !ok || m != 0xEF53 {
		return nil
	}
	compat, _ := d.le32(1024 + 0x5C)
	incompat, _ := d.le32(1024 + 0x60)
	const (
		hasJournal = 0x4
		extents    = 0x40
		flexBG     = 0x200
		bit64      = 0x80
	)
	name := "ext2"
	switch {
	case incompat&(extents|flexBG|bit64) != 0:
		name = "ext4"
	case compat&hasJournal != 0:
		name = "ext3"
	}
	return one(name, 1080)
}

func btrfs(d *disk) []Signature {
	if d.has(0x10040, "_BHRfS_M") {
		return one("btrfs", 0x10040)
	}
	return nil
}

// vfat: boot-sector signature 0x55AA plus a FAT type string (FAT12/16 at 54,
// FAT32 at 82) or the "MSWIN"/"MSDOS" OEM names. A boot sector without them
// is reported as a DOS partition table / boot record.
func vfat(d *disk) []Signature {
	if !d.has(510, "\x55\xaa") {
		return nil
	}
	switch {
	case d.has(54, "FAT12"), d.has(54, "FAT16"), d.has(82, "FAT32"), d.has(3, "MSDOS"), d.has(3, "MSWIN"), d.has(3, "mkfs.fat"):
		return one("vfat", 0)
	case d.has(3, "NTFS    "):
		return one("ntfs", 3)
	case d.has(3, "EXFAT   "):
		return one("exfat", 3)
	case d.has(3, "-FVE-FS-"):
		return one("BitLocker", 3)
	case d.has(512, "EFI PART"):
		return one("GPT partition table", 512)
	}
	return one("DOS boot record / partition table", 510)
}

// swap: "SWAPSPACE2" (or the old "SWAP-SPACE") in the last 10 bytes of the
// first page, for the page sizes Linux uses.
func swap(d *disk) []Signature {
	for _, page := range []int64{4096, 8192, 16384, 65536} {
		if d.has(page-10, "SWAPSPACE2") || d.has(page-10, "SWAP-SPACE") {
			return one("swap", page-10)
		}
	}
	return nil
}

// lvm2: label "LABELONE" in one of the first four sectors, type "LVM2 001".
func lvm2(d *disk) []Signature {
	for s := int64(0); s < 4; s++ {
		if d.has(s*512, "LABELONE") && d.has(s*512+24, "LVM2 001") {
			return one("LVM2 PV", s*512)
		}
	}
	return nil
}

// zfs: an uberblock (magic 0x00bab10c, either byte order) in the uberblock
// ring (128 KiB into a label) of labels 0/1 (start) or 2/3 (end).
func zfs(d *disk) []Signature {
	labels := []int64{0, 256 << 10}
	if end := d.size &^ (256<<10 - 1); end >= 1<<20 {
		labels = append(labels, end-512<<10, end-256<<10)
	}
	for _, l := range labels {
		for ub := l + 128<<10; ub < l+256<<10; ub += 1 << 10 {
			b := d.at(ub, 8)
			if b == nil {
				break
			}
			if binary.LittleEndian.Uint64(b) == 0x00bab10c || binary.BigEndian.Uint64(b) == 0x00bab10c {
				return one("ZFS member", ub)
			}
		}
	}
	return nil
}

func squashfs(d *disk) []Signature {
	if d.has(0, "hsqs") || d.has(0, "sqsh") {
		return one("squashfs", 0)
	}
	return nil
}

// iso9660: "CD001" in the first volume descriptor (sector 16 of 2048).
func iso9660(d *disk) []Signature {
	if d.has(32769, "CD001") {
		return one("iso9660", 32769)
	}
	return nil
}

// bcache: the 16-byte bcache UUID magic at 4096 + 24.
func bcache(d *disk) []Signature {
	if d.has(4096+24, "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81") {
		return one("bcache", 4096+24)
	}
	return nil
}

// mdraid: magic 0xa92b4efc (little-endian) at the superblock of each
// metadata version: 1.1 at 0, 1.2 at 4 KiB, 1.0 at 8 KiB before the end
// (4 KiB aligned), 0.90 at the last 64 KiB-aligned 64 KiB.
func mdraid(d *disk) []Signature {
	spots := []struct {
		name string
		off  int64
	}{
		{"MD RAID (v1.1)", 0},
		{"MD RAID (v1.2)", 4096},
		{"MD RAID (v1.0)", (d.size - 8192) &^ 4095},
		{"MD RAID (v0.90)", (d.size &^ (64<<10 - 1)) - 64<<10},
	}
	for _, s := range spots {
		if s.off < 0 {
			continue
		}
		if m, ok := d.le32(s.off); ok && m == 0xa92b4efc {
			return one(s.name, s.off)
		}
		if b := d.at(s.off, 4); b != nil && binary.BigEndian.Uint32(b) == 0xa92b4efc && s.name == "MD RAID (v0.90)" {
			return one(s.name+" big-endian", s.off)
		}
	}
	return nil
}

// others: cheap checks for more formats that must never be formatted over.
func others(d *disk) []Signature {
	var out []Signature
	if m, ok := d.le32(1024); ok && m == 0xF2F52010 {
		out = append(out, Signature{"f2fs", 1024})
	}
	if d.has(0x10000+64, "ReIsEr2Fs") || d.has(0x10000+52, "ReIsEr2Fs") || d.has(0x10000+52, "ReIsEr3Fs") {
		out = append(out, Signature{"reiserfs", 0x10000 + 52})
	}
	if d.has(0x8000, "JFS1") {
		out = append(out, Signature{"jfs", 0x8000})
	}
	if m, ok := d.le32(0x400); ok && m == 0x2fc12fc1 {
		out = append(out, Signature{"erofs", 0x400})
	}
	return out
}
