package unlock

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

const testPartUUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"

// TestConsumeWipeRequest: the migration case. An unencrypted (xfs)
// EPHEMERAL is never formatted; a wipe request naming its partition GUID
// clears itself in META, then erases the partition, which the engine then
// formats; the request is not acted on twice.
func TestConsumeWipeRequest(t *testing.T) {
	needTool(t, "mkfs.xfs")
	metaDev := image(t, meta.Size)
	dev := image(t, 320<<20)
	run(t, nil, "mkfs.xfs", "-q", "-f", dev.Name())
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pw"}), "EPHEMERAL")
	if _, err := (&Engine{}).Unlock(ctx, vol, dev, 320<<20); !errors.Is(err, probe.ErrNotEmpty) {
		t.Fatalf("xfs formatted: %v", err)
	}
	m := meta.New()
	if err := meta.RequestWipe(m, meta.WipeRequest{Volume: "EPHEMERAL", PartUUID: testPartUUID}); err != nil {
		t.Fatal(err)
	}
	m.Write(metaDev)
	w, err := ConsumeWipeRequest(metaDev, "EPHEMERAL", testPartUUID, dev, 320<<20)
	if err != nil || w == nil || w.Request.PartUUID != testPartUUID || !strings.Contains(w.Erased, "first 4 MiB") {
		t.Fatal(w, err)
	}
	if r, err := (&Engine{}).Unlock(ctx, vol, dev, 320<<20); err != nil || !r.Formatted {
		t.Fatalf("after wipe: %v", err)
	}
	if w, _ := ConsumeWipeRequest(metaDev, "EPHEMERAL", testPartUUID, dev, 320<<20); w != nil {
		t.Fatal("wiped twice")
	}
}

// TestWipeRequestTargets: a request by LUKS UUID wipes only the volume whose
// header carries that UUID; a request for another partition (other LUKS
// UUID, other or unknown partition GUID) writes nothing, not to META and
// not to the volume.
func TestWipeRequestTargets(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "pw"}), "EPHEMERAL")
	dev := image(t, imageSize)
	r, err := (&Engine{}).Unlock(ctx, vol, dev, imageSize)
	if err != nil || !r.Formatted {
		t.Fatal(err)
	}
	r.Zero()
	h, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func() []byte {
		b := make([]byte, imageSize)
		dev.ReadAt(b, 0)
		return b
	}
	for _, c := range []struct {
		name     string
		req      meta.WipeRequest
		partUUID string
	}{
		{"other LUKS UUID", meta.WipeRequest{LUKSUUID: "11111111-2222-4333-8444-555555555555"}, testPartUUID},
		{"other partition", meta.WipeRequest{PartUUID: "a19d880f-05fc-4d3b-a006-743f0f84911e", LUKSUUID: h.UUID}, testPartUUID},
		{"partition GUID unknown", meta.WipeRequest{PartUUID: testPartUUID}, ""},
	} {
		metaDev := image(t, meta.Size)
		c.req.Volume = "EPHEMERAL"
		m := meta.New()
		if err := meta.RequestWipe(m, c.req); err != nil {
			t.Fatal(err)
		}
		m.Write(metaDev)
		metaBefore, devBefore := make([]byte, meta.Size), snapshot()
		metaDev.ReadAt(metaBefore, 0)
		w, err := ConsumeWipeRequest(metaDev, "EPHEMERAL", c.partUUID, dev, imageSize)
		var mm *meta.WipeMismatchError
		if w != nil || !errors.As(err, &mm) {
			t.Fatalf("%s: %v %v", c.name, w, err)
		}
		metaAfter := make([]byte, meta.Size)
		metaDev.ReadAt(metaAfter, 0)
		if !bytes.Equal(metaBefore, metaAfter) || !bytes.Equal(devBefore, snapshot()) {
			t.Fatalf("%s: something was written", c.name)
		}
	}
	metaDev := image(t, meta.Size)
	m := meta.New()
	meta.RequestWipe(m, meta.WipeRequest{Volume: "EPHEMERAL", LUKSUUID: strings.ToUpper(h.UUID)})
	m.Write(metaDev)
	if w, err := ConsumeWipeRequest(metaDev, "EPHEMERAL", "", dev, imageSize); err != nil || w == nil {
		t.Fatalf("by LUKS UUID: %v %v", w, err)
	}
	if _, err := luks2.ReadHeader(dev); err == nil {
		t.Fatal("the LUKS header survived the wipe")
	}
}
