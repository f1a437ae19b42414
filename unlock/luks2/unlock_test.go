package luks2

import (
	"errors"
	"strings"
	"testing"
)

// A key that opens nothing gets an error naming the volume and every slot
// tried, so an operator knows which slots to check.
func TestUnlockErrorNamesSlots(t *testing.T) {
	img, h := formatPBKDF2(t, []byte("zero"))
	f := openRW(t, img)
	vk, _, err := h.Unlock(f, []byte("zero"), AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(vk)
	if _, err := AddKeyslot(f, vk, []byte("three"), 3, kdfPBKDF2); err != nil {
		t.Fatal(err)
	}
	h = readHeaderFile(t, img)
	_, _, err = h.Unlock(f, []byte("wrong"), AnySlot)
	if !errors.Is(err, ErrNoKeyslotOpens) || !strings.Contains(err.Error(), h.UUID) || !strings.Contains(err.Error(), "tried slots [0 3]") {
		t.Errorf("Unlock with a wrong key: %v; want ErrNoKeyslotOpens naming %s and slots [0 3]", err, h.UUID)
	}
}
