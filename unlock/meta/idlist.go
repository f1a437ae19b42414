package meta

import (
	"slices"
	"strings"
)

// TagWipeRequest and TagFormatJournal each hold a list of volume IDs, one
// per line; these helpers are the one reading and editing of that list.

// volumeIDs lists the volume IDs stored in tag (none when it is unset).
func volumeIDs(m *Meta, tag uint32) []string {
	v, _ := m.Get(tag)
	var ids []string
	for _, id := range strings.Split(string(v), "\n") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// addVolumeID adds id to tag's list and reports whether it was missing.
func addVolumeID(m *Meta, tag uint32, id string) bool {
	ids := volumeIDs(m, tag)
	if slices.Contains(ids, id) {
		return false
	}
	m.Set(tag, []byte(strings.Join(append(ids, id), "\n")))
	return true
}

// removeVolumeID removes id from tag's list, deleting the tag when the
// list empties, and reports whether id was there.
func removeVolumeID(m *Meta, tag uint32, id string) bool {
	ids := volumeIDs(m, tag)
	i := slices.Index(ids, id)
	if i < 0 {
		return false
	}
	ids = slices.Delete(ids, i, i+1)
	if len(ids) == 0 {
		m.Delete(tag)
	} else {
		m.Set(tag, []byte(strings.Join(ids, "\n")))
	}
	return true
}
