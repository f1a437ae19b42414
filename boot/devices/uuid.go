package devices

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// Partition and filesystem identifiers for root=PARTUUID= and root=UUID=.
// Linux 6.1 puts no PARTUUID in a partition's uevent (only PARTN and
// PARTNAME), so the partition GUID is read from the disk's GPT; the
// filesystem UUID comes from the superblock, as blkid reads it.

// ErrNoGPT says a disk carries no (valid) GUID partition table.
var ErrNoGPT = errors.New("no GPT")

// GPTEntry is one used entry of a GUID partition table.
type GPTEntry struct {
	Index    int    // partition number, 1-based (the kernel's PARTN)
	PartUUID string // unique partition GUID, lower case
	Name     string // partition name (the kernel's PARTNAME)
	FirstLBA uint64
	LastLBA  uint64
}

// maxGPTEntries bounds what ReadGPT allocates for a corrupt header (the
// UEFI minimum is 128 entries of 128 bytes; nothing real uses thousands).
const maxGPTEntries = 4096

// ReadGPT reads the primary GUID partition table of a disk. It tries
// 512-byte, then 4096-byte logical sectors (the header sits in LBA 1) and
// checks the header and entry-array CRCs.
func ReadGPT(r io.ReaderAt) ([]GPTEntry, error) {
	var firstErr error
	for _, sector := range []int64{512, 4096} {
		entries, err := readGPT(r, sector)
		if err == nil {
			return entries, nil
		}
		if firstErr == nil || !errors.Is(err, ErrNoGPT) {
			firstErr = err
		}
	}
	return nil, firstErr
}

func readGPT(r io.ReaderAt, sector int64) ([]GPTEntry, error) {
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, sector); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, ErrNoGPT
	}
	size := binary.LittleEndian.Uint32(hdr[12:16])
	if size < 92 || int64(size) > sector {
		return nil, fmt.Errorf("%w: header size %d", ErrNoGPT, size)
	}
	full := make([]byte, size)
	if _, err := r.ReadAt(full, sector); err != nil {
		return nil, fmt.Errorf("read GPT header: %w", err)
	}
	want := binary.LittleEndian.Uint32(full[16:20])
	binary.LittleEndian.PutUint32(full[16:20], 0)
	if got := crc32.ChecksumIEEE(full); got != want {
		return nil, fmt.Errorf("%w: header CRC %08x, want %08x", ErrNoGPT, got, want)
	}
	lba := binary.LittleEndian.Uint64(hdr[72:80])
	n := binary.LittleEndian.Uint32(hdr[80:84])
	esize := binary.LittleEndian.Uint32(hdr[84:88])
	if n > maxGPTEntries || esize < 128 || esize%8 != 0 || esize > 4096 || lba < 2 {
		return nil, fmt.Errorf("%w: %d entries of %d bytes at LBA %d", ErrNoGPT, n, esize, lba)
	}
	arr := make([]byte, int(n)*int(esize))
	if _, err := r.ReadAt(arr, int64(lba)*sector); err != nil {
		return nil, fmt.Errorf("read GPT entries: %w", err)
	}
	if got, want := crc32.ChecksumIEEE(arr), binary.LittleEndian.Uint32(hdr[88:92]); got != want {
		return nil, fmt.Errorf("%w: entries CRC %08x, want %08x", ErrNoGPT, got, want)
	}
	var out []GPTEntry
	for i := 0; i < int(n); i++ {
		e := arr[i*int(esize) : (i+1)*int(esize)]
		if allZero(e[:16]) { // unused entry: zero type GUID
			continue
		}
		out = append(out, GPTEntry{
			Index:    i + 1,
			PartUUID: formatGUID(e[16:32]),
			Name:     utf16Name(e[56:128]),
			FirstLBA: binary.LittleEndian.Uint64(e[32:40]),
			LastLBA:  binary.LittleEndian.Uint64(e[40:48]),
		})
	}
	return out, nil
}

// formatGUID writes a GPT GUID the way blkid and the kernel print it: the
// first three fields are stored little-endian.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// formatUUID writes a big-endian (RFC 4122 byte order) UUID, as ext4 and
// xfs store theirs.
func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func allZero(b []byte) bool {
	return bytes.Count(b, []byte{0}) == len(b)
}

// FSID is a filesystem's type and UUID as blkid names them.
type FSID struct {
	Type string // "ext4", "xfs", "vfat"
	UUID string // lower case; vfat's is its volume serial, "1234-abcd"
}

// fsProbeLen covers every superblock FSUUID reads (ext4's ends at 2 KiB).
const fsProbeLen = 4096

// FSUUID reads the filesystem UUID of a device. It knows the filesystems
// cryptinit mounts as a root or a config source: ext2/3/4, xfs and FAT.
// ok is false when the device holds none of them.
func FSUUID(r io.ReaderAt) (id FSID, ok bool, err error) {
	b := make([]byte, fsProbeLen)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return FSID{}, false, err
	}
	b = b[:n]
	switch {
	case len(b) >= 1024+0x78 && binary.LittleEndian.Uint16(b[1024+0x38:]) == 0xef53:
		// ext2/3/4: s_magic at 0x38, s_uuid at 0x68 of the superblock at 1024.
		return FSID{Type: extType(b[1024:]), UUID: formatUUID(b[1024+0x68 : 1024+0x78])}, true, nil
	case len(b) >= 48 && string(b[0:4]) == "XFSB":
		// xfs: sb_uuid at 32 (after magic, blocksize, dblocks, rblocks, rextents).
		return FSID{Type: "xfs", UUID: formatUUID(b[32:48])}, true, nil
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xaa:
		if serial, ok := fatSerial(b); ok {
			return FSID{Type: "vfat", UUID: serial}, true, nil
		}
	}
	return FSID{}, false, nil
}

// extType tells ext4 from ext3 and ext2 by feature flags, as blkid does
// closely enough for a log line.
func extType(sb []byte) string {
	compat := binary.LittleEndian.Uint32(sb[0x5c:])
	incompat := binary.LittleEndian.Uint32(sb[0x60:])
	const hasJournal, extents, flexBG, bit64 = 0x4, 0x40, 0x200, 0x80
	switch {
	case incompat&(extents|flexBG|bit64) != 0:
		return "ext4"
	case compat&hasJournal != 0:
		return "ext3"
	}
	return "ext2"
}

// fatSerial reads a FAT boot sector's volume serial number, formatted as
// blkid's UUID ("1a2b-3c4d"). FAT32 keeps its extended BPB at 0x40,
// FAT12/16 at 0x24; the boot signature 0x29 says the serial is there.
func fatSerial(b []byte) (string, bool) {
	bytesPerSector := binary.LittleEndian.Uint16(b[11:13])
	if bytesPerSector < 512 || bytesPerSector&(bytesPerSector-1) != 0 || b[13] == 0 {
		return "", false // not a BIOS parameter block
	}
	var off int
	switch {
	case binary.LittleEndian.Uint16(b[22:24]) == 0 && b[0x42] == 0x29: // FAT32: 16-bit FAT size 0
		off = 0x43
	case b[0x26] == 0x29:
		off = 0x27
	default:
		return "", false
	}
	s := binary.LittleEndian.Uint32(b[off : off+4])
	return fmt.Sprintf("%04x-%04x", s>>16, s&0xffff), true
}

// normID compares identifiers the way users type them: any case, with or
// without surrounding quotes.
func normID(s string) string {
	return strings.ToLower(strings.Trim(s, `"`))
}
