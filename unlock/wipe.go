package unlock

import (
	"fmt"
	"io"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// WipeErased says what a wipe request erases: what probe.Wipe zeroes.
const WipeErased = "zeroed the first 4 MiB + 4 KiB and the last 1 MiB (every signature, the LUKS headers and key slots; the data between is left as unreadable garbage)"

// Wiped is a wipe request acted on: which request, and what was erased.
type Wiped struct {
	Request meta.WipeRequest
	Erased  string
}

// ConsumeWipeRequest is for the boot, before Unlock. partUUID is the GPT
// partition GUID the boot read for volumeID's partition ("" when it could
// not); the LUKS UUID is read here from dev's header. It writes only when
// META holds a readable request (meta.TagWipeRequest) for volumeID whose
// target matches that partition, and then in this order: META without the
// request (meta.ConsumeWipeRequest), then dev, zeroed by probe.Wipe so that
// Unlock formats the volume. It returns what it wiped (nil: nothing), or a
// *meta.WipeMismatchError when the request targets another partition
// (nothing written).
func ConsumeWipeRequest(metaDev meta.ReadWriterAt, volumeID, partUUID string, dev interface {
	io.ReaderAt
	io.WriterAt
}, size int64) (*Wiped, error) {
	found := meta.Partition{PartUUID: partUUID}
	if h, err := luks2.ReadHeader(dev); err == nil {
		found.LUKSUUID = h.UUID
	}
	req, err := meta.ConsumeWipeRequest(metaDev, volumeID, found)
	if err != nil || req == nil {
		return nil, err
	}
	if err := probe.Wipe(dev, size); err != nil {
		return nil, fmt.Errorf("wipe %s as requested in META (the request is already cleared; the volume may be half erased: ask again with cryptctl meta request-wipe): %w", volumeID, err)
	}
	return &Wiped{Request: *req, Erased: WipeErased}, nil
}
