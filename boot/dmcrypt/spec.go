// Package dmcrypt maps an opened LUKS2 volume with the kernel's dm-crypt
// target and makes its /dev/mapper node itself (there is no udev in the
// initramfs): the kernel names the mapping in /sys/block/dm-N/dm/name and
// gives its numbers in /sys/block/dm-N/dev; /dev/mapper/control comes from
// devtmpfs.
package dmcrypt

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// Spec is one dm-crypt mapping to create.
type Spec struct {
	Name       string   // mapping name, e.g. luks2-STATE
	UUID       string   // dm UUID, see DMUUID
	Backing    string   // the partition, e.g. /dev/vda2
	Cipher     string   // e.g. aes-xts-plain64
	Key        []byte   // volume key; Map does not keep it
	Offset     uint64   // bytes into Backing where the data starts
	Size       uint64   // bytes of data
	IVTweak    uint64   // in 512-byte sectors
	SectorSize uint64   // encryption sector size in bytes (512, 4096)
	Flags      []string // dm-crypt optional parameters, e.g. allow_discards
}

// DMUUID is the dm UUID cryptsetup gives a LUKS2 mapping, so tools that
// recognise cryptsetup mappings recognise ours.
func DMUUID(luksUUID, name string) string {
	return "CRYPT-LUKS2-" + strings.ReplaceAll(luksUUID, "-", "") + "-" + name
}

// dmFlags are dm-crypt's optional parameters that cryptinit passes on;
// LUKS2 persistent flags and config options name them with '-' or '_'.
func dmFlags() []string {
	return []string{"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue", "no_write_workqueue"}
}

// FromMapping builds the Spec for a volume opened by the unlock engine.
// backingSize is the partition size in bytes (for segments that run to the
// end of the device); options are extra dm-crypt options from the config.
func FromMapping(name, backing string, backingSize int64, luksUUID string, m luks2.Mapping, options []string, key []byte) (Spec, error) {
	size := m.Size
	if m.Dynamic {
		if uint64(backingSize) <= m.Offset {
			return Spec{}, fmt.Errorf("map %s: %s is %d bytes, smaller than the data offset %d", name, backing, backingSize, m.Offset)
		}
		size = uint64(backingSize) - m.Offset
	}
	sector := uint64(m.SectorSize)
	if sector == 0 {
		sector = 512
	}
	size -= size % sector
	if size == 0 {
		return Spec{}, fmt.Errorf("map %s: no data area on %s", name, backing)
	}
	if len(key) != 0 && m.KeySize != 0 && len(key) != m.KeySize {
		return Spec{}, fmt.Errorf("map %s: volume key is %d bytes, header says %d", name, len(key), m.KeySize)
	}
	var flags []string
	add := func(f string) {
		f = strings.TrimSpace(f)
		if f == "" {
			return
		}
		f = strings.ReplaceAll(f, "-", "_")
		if !slices.Contains(flags, f) {
			flags = append(flags, f)
		}
	}
	if m.AllowDiscards {
		add("allow_discards")
	}
	for _, f := range m.Flags {
		add(f)
	}
	for _, o := range options {
		add(o)
	}
	for _, f := range flags {
		if !slices.Contains(dmFlags(), f) {
			return Spec{}, fmt.Errorf("map %s: unknown dm-crypt option %q (known: allow-discards, same-cpu-crypt, submit-from-crypt-cpus, no-read-workqueue, no-write-workqueue)", name, f)
		}
	}
	return Spec{
		Name: name, UUID: DMUUID(luksUUID, name), Backing: backing, Cipher: m.Cipher, Key: key,
		Offset: m.Offset, Size: size, IVTweak: m.IVTweak, SectorSize: sector, Flags: flags,
	}, nil
}
