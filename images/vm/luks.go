package vm

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// LUKSKeyslots reads the LUKS2 header at the start of the partition labelled
// label, on the host, and returns the numbers of its active keyslots. Tests use
// it to check key rotation from outside the VM.
func (d *Disk) LUKSKeyslots(label string) ([]int, error) {
	hdr := make([]byte, 4096)
	if err := d.ReadAt(label, hdr, 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(hdr[:6], []byte("LUKS\xba\xbe")) {
		return nil, fmt.Errorf("vm: %s on %s has no LUKS header", label, d.Path)
	}
	if v := binary.BigEndian.Uint16(hdr[6:8]); v != 2 {
		return nil, fmt.Errorf("vm: %s: LUKS version %d, want 2", label, v)
	}
	size := binary.BigEndian.Uint64(hdr[8:16])
	if size < 4096*2 || size > 4<<20 {
		return nil, fmt.Errorf("vm: %s: implausible LUKS2 header size %d", label, size)
	}
	area := make([]byte, size-4096)
	if err := d.ReadAt(label, area, 4096); err != nil {
		return nil, err
	}
	if i := bytes.IndexByte(area, 0); i >= 0 {
		area = area[:i]
	}
	var meta struct {
		Keyslots map[string]json.RawMessage `json:"keyslots"`
	}
	if err := json.Unmarshal(area, &meta); err != nil {
		return nil, fmt.Errorf("vm: %s: LUKS2 JSON: %w", label, err)
	}
	var slots []int
	for k := range meta.Keyslots {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("vm: %s: keyslot %q: %w", label, k, err)
		}
		slots = append(slots, n)
	}
	sort.Ints(slots)
	return slots, nil
}
