package unlock

import (
	"fmt"
	"io"

	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// ConsumeWipeRequest is for the boot, before Unlock: when META asks to wipe
// volumeID (cryptinit's one-shot request, meta.TagWipeRequest), it clears
// the request in META first and then zeroes what probe looks at on dev, so
// that Unlock formats the volume. It reports whether it wiped.
func ConsumeWipeRequest(metaDev meta.ReadWriterAt, volumeID string, dev io.WriterAt, size int64) (bool, error) {
	asked, err := meta.ConsumeWipeRequest(metaDev, volumeID)
	if err != nil || !asked {
		return false, err
	}
	if err := probe.Wipe(dev, size); err != nil {
		return false, fmt.Errorf("wipe %s as requested in META: %w", volumeID, err)
	}
	return true, nil
}
