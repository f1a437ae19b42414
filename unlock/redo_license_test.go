package unlock

import (
	"bytes"
	"errors"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// A format whose luks2.Format fails before writing anything leaves no
// journal record (it would only license a later redo to wipe whatever
// lands on the partition); one that fails after a write keeps it (that
// torn format is what the redo is for).
func TestFormatFailureBeforeAnyWriteEndsTheRecord(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "a"}), "EPHEMERAL")

	// too small for a LUKS2 header: luks2.Format refuses before writing
	const small = 8 << 20
	f := image(t, small)
	j := &meta.Journal{Dev: make(memMeta, meta.Size)}
	e := &Engine{Journal: j}
	if _, err := e.Unlock(ctx, vol, f, small); !errors.Is(err, luks2.ErrDeviceTooSmall) {
		t.Fatalf("format of a too small partition: %v", err)
	}
	if r, err := j.Record("EPHEMERAL"); r != nil || err != nil {
		t.Fatalf("nothing was written, yet the record stays: %+v %v", r, err)
	}

	// the first write fails (torn): the record stays at "begun"
	g := image(t, imageSize)
	dev := &crashDev{f: g, left: 0}
	if _, err := e.Unlock(ctx, vol, dev, imageSize); err == nil {
		t.Fatal("crash not reported")
	}
	if r, err := j.Record("EPHEMERAL"); r == nil || err != nil || r.Stage != meta.StageBegun {
		t.Fatalf("after a torn first write the record is %+v %v, want stage begun", r, err)
	}
}

// A redo of a format cut short before its header (stage "begun", no
// valid header) wipes only when every non-zero byte it can see lies in
// the LUKS2 header area that format writes: bytes past it (data area,
// the partition's last MiB) are not ours and refuse the redo.
func TestRedoWithoutHeaderNeedsBytesInHeaderArea(t *testing.T) {
	vol := volume(t, staticConfig("EPHEMERAL", map[int]string{0: "a"}), "EPHEMERAL")
	junk := bytes.Repeat([]byte{0x5A}, 512)
	for _, tc := range []struct {
		name   string
		offs   []int64
		redone bool
	}{
		{"header area only", []int64{64 << 10}, true},
		{"data area too", []int64{64 << 10, 16<<20 + 4096}, false},
		{"last MiB too", []int64{64 << 10, imageSize - 4096}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := image(t, imageSize)
			for _, off := range tc.offs {
				if _, err := f.WriteAt(junk, off); err != nil {
					t.Fatal(err)
				}
			}
			j := &meta.Journal{Dev: make(memMeta, meta.Size)}
			if err := j.Begin(meta.Record{Volume: "EPHEMERAL", UUID: "0b4c1f7e-3d2a-4c59-9e8f-1a2b3c4d5e6f", Slot: 0}); err != nil {
				t.Fatal(err)
			}
			before := digest(t, f)
			res, err := (&Engine{Journal: j}).Unlock(ctx, vol, f, imageSize)
			if !tc.redone {
				if !errors.Is(err, probe.ErrNotEmpty) || res != nil {
					t.Fatalf("bytes past the header area: redo not refused: %v", err)
				}
				if digest(t, f) != before {
					t.Fatal("the partition was written")
				}
				return
			}
			if err != nil || !res.Formatted || res.Wiped == "" {
				t.Fatalf("redo: %v %+v", err, res)
			}
			res.Zero()
		})
	}
}

// With KeepFormatRecord a finished format leaves its record at its last
// stage for the caller to remove after mkfs. Such a record never licenses
// a redo: with the key unavailable or wrong the volume is refused and left
// byte for byte; an open reports FormatCompleted and keeps the record.
func TestKeptFormatRecordIsNeverRedone(t *testing.T) {
	kmsKey := "    - {slot: 0, kms: {endpoint: grpc://kms:1}}\n"
	staticKey := "    - {slot: 0, static: {passphrase: a}}\n"
	for _, tc := range []struct {
		name, key string
		stage     string
		lose      func(kms *fakeKMS, vol *config.Volume)
	}{
		{"kms down", kmsKey, meta.StageToken, func(kms *fakeKMS, _ *config.Volume) { kms.down = true }},
		{"static wrong", staticKey, meta.StageHeader, func(_ *fakeKMS, vol *config.Volume) {
			vol.Encryption.Keys[0].Static.Passphrase = "not-a"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kms := &fakeKMS{}
			vol := volume(t, "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"+tc.key+fastKDF, "EPHEMERAL")
			f := image(t, imageSize)
			j := &meta.Journal{Dev: make(memMeta, meta.Size)}
			e := &Engine{Env: keys.Env{NodeUUID: keys.StaticUUID(testUUID), KMS: kms}, Journal: j, KeepFormatRecord: true}
			res, err := e.Unlock(ctx, vol, f, imageSize)
			if err != nil || !res.Formatted {
				t.Fatalf("format: %v", err)
			}
			res.Zero()
			r, err := j.Record("EPHEMERAL")
			if err != nil || r == nil || r.Stage != tc.stage || r.UUID != res.UUID {
				t.Fatalf("kept record %+v %v, want stage %s", r, err, tc.stage)
			}

			again, err := e.Unlock(ctx, vol, f, imageSize)
			if err != nil || again.Formatted || !again.FormatCompleted {
				t.Fatalf("open with the record kept: %v %+v", err, again)
			}
			again.Zero()
			if r, _ := j.Record("EPHEMERAL"); r == nil {
				t.Fatal("the open removed a record the caller keeps")
			}

			lost := vol // a copy whose key is lost
			enc := *vol.Encryption
			enc.Keys = append([]config.Key(nil), enc.Keys...)
			if enc.Keys[0].Static != nil {
				s := *enc.Keys[0].Static
				enc.Keys[0].Static = &s
			}
			lost.Encryption = &enc
			tc.lose(kms, &lost)
			before := digest(t, f)
			if _, err := e.Unlock(ctx, lost, f, imageSize); !errors.Is(err, ErrNoKeyOpens) {
				t.Fatalf("key lost: %v, want a refusal", err)
			}
			if digest(t, f) != before {
				t.Fatal("key lost: the volume was written to")
			}
		})
	}
}
