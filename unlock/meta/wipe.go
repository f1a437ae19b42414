package meta

import (
	"errors"
	"fmt"
)

// The wipe request (TagWipeRequest, user-reserved tag 12) is the seed's
// "wipe this partition before the next boot encrypts it" for migrating a
// volume from unencrypted to encrypted: cryptctl (or an operator tool) sets
// it, the next boot consumes it. The value is the volume IDs to wipe, one
// per line.

// RequestWipe adds volumeID to the wipe request.
func RequestWipe(m *Meta, volumeID string) { addVolumeID(m, TagWipeRequest, volumeID) }

// WipeRequests lists the volumes asked to be wiped.
func WipeRequests(m *Meta) []string { return volumeIDs(m, TagWipeRequest) }

// TakeWipeRequest removes volumeID from the request (deleting the tag when
// it empties) and reports whether it was asked for.
func TakeWipeRequest(m *Meta, volumeID string) bool {
	return removeVolumeID(m, TagWipeRequest, volumeID)
}

// ConsumeWipeRequest is for the boot: if META asks to wipe volumeID, it
// clears the request and writes META back BEFORE returning true; only then
// may the caller wipe. Clearing first means a crash between the two steps
// loses the request (the operator asks again) instead of wiping twice, which
// would destroy the volume freshly encrypted after the first wipe.
func ConsumeWipeRequest(dev ReadWriterAt, volumeID string) (bool, error) {
	m, err := Read(dev)
	if errors.Is(err, ErrBlank) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read META for wipe request: %w", err)
	}
	if !TakeWipeRequest(m, volumeID) {
		return false, nil
	}
	if err := m.Write(dev); err != nil {
		return false, fmt.Errorf("clear wipe request for %s in META (volume not wiped): %w", volumeID, err)
	}
	return true, nil
}
