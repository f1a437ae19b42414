package keys

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// UUIDSource gives the node's UUID.
type UUIDSource interface {
	NodeUUID(ctx context.Context) (string, error)
}

// Default locations of the node UUID.
const (
	SysfsProductUUID = "/sys/class/dmi/id/product_uuid"
	SMBIOSTable      = "/sys/firmware/dmi/tables/DMI"
)

// StaticUUID is a fixed UUID (tests, cryptctl --node-uuid, META tag 15).
type StaticUUID string

// NodeUUID implements UUIDSource.
func (u StaticUUID) NodeUUID(context.Context) (string, error) { return string(u), nil }

// SysfsUUID reads the kernel's product_uuid file (lower-case, hyphenated).
type SysfsUUID struct{ Path string }

// NodeUUID implements UUIDSource.
func (s SysfsUUID) NodeUUID(context.Context) (string, error) {
	p := s.Path
	if p == "" {
		p = SysfsProductUUID
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.ToLower(strings.TrimSpace(string(b))), nil
}

// SMBIOSUUID reads the system UUID from the raw SMBIOS table (type 1).
type SMBIOSUUID struct{ Path string }

// NodeUUID implements UUIDSource.
func (s SMBIOSUUID) NodeUUID(context.Context) (string, error) {
	p := s.Path
	if p == "" {
		p = SMBIOSTable
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return SystemUUIDFromSMBIOS(b)
}

// SystemUUIDFromSMBIOS finds the type 1 (System Information) structure in a
// raw SMBIOS table and formats its UUID the way Linux does for SMBIOS 2.6+
// (first three fields little-endian), lower-case and hyphenated. Checked
// against a QEMU q35 guest, whose kernel shows the same in product_uuid
// (testdata/qemu-q35-dmi.bin); firmware older than SMBIOS 2.6 stored the
// fields big-endian and is not handled.
func SystemUUIDFromSMBIOS(table []byte) (string, error) {
	for off := 0; off+4 <= len(table); {
		typ, length := table[off], int(table[off+1])
		if length < 4 || off+length > len(table) {
			break
		}
		if typ == 1 {
			if length < 0x18 {
				return "", errors.New("SMBIOS type 1 structure too short for a UUID")
			}
			u := table[off+8 : off+24]
			return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
				binary.LittleEndian.Uint32(u[0:4]), binary.LittleEndian.Uint16(u[4:6]),
				binary.LittleEndian.Uint16(u[6:8]), u[8:10], u[10:16]), nil
		}
		if typ == 127 { // end of table
			break
		}
		// skip the formatted area, then the strings up to a double NUL
		next := off + length
		for next+1 < len(table) && !(table[next] == 0 && table[next+1] == 0) {
			next++
		}
		off = next + 2
	}
	return "", errors.New("no SMBIOS type 1 structure")
}

// FirstUUID tries sources in order and returns the first UUID found.
type FirstUUID []UUIDSource

// NodeUUID implements UUIDSource.
func (f FirstUUID) NodeUUID(ctx context.Context) (string, error) {
	var errs []error
	for _, s := range f {
		id, err := s.NodeUUID(ctx)
		if err == nil && id != "" {
			return id, nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return "", errors.New("no node UUID source")
	}
	return "", errors.Join(errs...)
}

// MachineUUID is the node UUID as Talos takes it: META tag 15 (UUIDOverride)
// when set, else sysfs product_uuid, else the SMBIOS table. override is tag
// 15's value (nil when unset).
func MachineUUID(override []byte) UUIDSource {
	var srcs FirstUUID
	if o := strings.TrimSpace(string(override)); o != "" {
		srcs = append(srcs, StaticUUID(o))
	}
	return append(srcs, SysfsUUID{}, SMBIOSUUID{})
}
