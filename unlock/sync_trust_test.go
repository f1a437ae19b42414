package unlock

import (
	"errors"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// attackerTag9 is what someone holding the disk writes into META tag 9: the
// node's own nodeID slot, so that STATE still opens, plus a static key of
// their own in slot 5.
const attackerTag9 = `{"EncryptionProvider":"luks2","EncryptionKeys":[` +
	`{"KeySlot":0,"KeyNodeID":{}},{"KeySlot":5,"KeyStatic":{"KeyData":"attacker"}}]}`

// TestSyncRefusesTag9Enrollment is issue 10 defect 10 at engine level: STATE
// opens with its nodeID key while its config comes from META tag 9 only; a
// static slot planted in tag 9 must not be enrolled, nothing at all may be
// written (no slot, no fingerprint token), and the report says why.
func TestSyncRefusesTag9Enrollment(t *testing.T) {
	metaDev := image(t, meta.Size)
	dev := image(t, imageSize)
	e := nodeEngine("")
	// first boot with the signed image's config: STATE formatted, tag 9 written
	cfg := &config.Config{Volumes: []config.Volume{volume(t, staticOrNodeID(""), config.StateVolume)}}
	vol, _, err := meta.ReadStateConfig(cfg, metaDev)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.Unlock(ctx, *vol, dev, imageSize); err != nil || !r.Formatted {
		t.Fatalf("format: %v", err)
	}
	// the attacker's tag 9
	m, err := meta.Read(metaDev)
	if err != nil {
		t.Fatal(err)
	}
	m.Set(meta.TagStateEncryptionConfig, []byte(attackerTag9))
	if err := m.Write(metaDev); err != nil {
		t.Fatal(err)
	}
	before := digest(t, dev)

	vol, src, err := meta.ReadStateConfig(nil, metaDev)
	if err != nil || src != meta.SourceMETA || vol.Trust.Authenticated {
		t.Fatalf("tag 9 config: %v, source %q, trust %+v", err, src, vol.Trust)
	}
	r, err := e.Unlock(ctx, *vol, dev, imageSize)
	if err != nil || r.Slot != 0 {
		t.Fatalf("STATE does not open with its nodeID key: %v", err)
	}
	if got := slotsOf(t, dev); len(got) != 1 || got[0] != 0 {
		t.Errorf("slots after the boot: %v, want [0]: the planted key was enrolled", got)
	}
	if opens(t, dev, "attacker", luks2.AnySlot) {
		t.Error("the attacker's passphrase opens STATE")
	}
	if digest(t, dev) != before {
		t.Error("STATE changed on disk (a slot, token or the sync fingerprint was written)")
	}
	rep := r.Sync
	if rep.Changed() || len(rep.Skipped) != 1 || rep.Skipped[0] != "add slot 5 (static)" {
		t.Errorf("report: %v (skipped %q)", rep, rep.Skipped)
	}
	if len(rep.Problems) != 1 || !errors.Is(rep.Problems[0], ErrNotAuthenticated) ||
		!strings.Contains(rep.Problems[0].Error(), "config from META tag 9 is not authenticated: slot changes need a machine config in the signed image") {
		t.Errorf("the report does not say why nothing was enrolled: %v", rep.Problems)
	}
	if strings.Contains(rep.String(), "attacker") {
		t.Errorf("the report shows the passphrase: %s", rep)
	}
}

// staticOrNodeID is a STATE config with nodeID in slot 0 and, when pass is
// set, a static key in slot 5.
func staticOrNodeID(pass string) string {
	y := "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n    - nodeID: {}\n      slot: 0\n"
	if pass != "" {
		y += "    - static: {passphrase: " + pass + "}\n      slot: 5\n"
	}
	return y + smallKDF
}

// TestSyncTrust runs one sync per kind of change for an authenticated and a
// not authenticated config: only the first writes, the second lists what
// it skipped.
func TestSyncTrust(t *testing.T) {
	cases := []struct {
		name        string
		first, then map[int]string // slots -> static passphrases (slot 0 opens)
		recovery    bool           // then marks slot 1 as a recovery key
		skipped     []string
		slots       []int // after an authenticated sync
	}{
		{name: "add", first: map[int]string{0: "a"}, then: map[int]string{0: "a", 1: "b"},
			skipped: []string{"add slot 1 (static)"}, slots: []int{0, 1}},
		{name: "remove", first: map[int]string{0: "a", 1: "b"}, then: map[int]string{0: "a"},
			skipped: []string{"remove slot 1"}, slots: []int{0}},
		{name: "recovery mark", first: map[int]string{0: "a", 1: "b"}, then: map[int]string{0: "a", 1: "b"}, recovery: true,
			skipped: []string{"mark slot 1 (static) as recovery key"}, slots: []int{0, 1}},
	}
	for _, tc := range cases {
		for _, trusted := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{true: "/authenticated", false: "/not-authenticated"}[trusted], func(t *testing.T) {
				dev := image(t, imageSize)
				e := &Engine{}
				if _, err := e.Unlock(ctx, volume(t, staticConfig("EPHEMERAL", tc.first), "EPHEMERAL"), dev, imageSize); err != nil {
					t.Fatal(err)
				}
				y := staticConfig("EPHEMERAL", tc.then)
				if tc.recovery {
					y = strings.Replace(y, "slot: 1\n", "slot: 1\n      recovery: true\n", 1)
				}
				vol := volume(t, y, "EPHEMERAL")
				vol.Trust = config.Trust{Source: "cryptinit.config=PARTLABEL=ESP:/c.yaml", Authenticated: trusted}
				before := digest(t, dev)
				r, err := e.Unlock(ctx, vol, dev, imageSize)
				if err != nil {
					t.Fatal(err)
				}
				if !trusted {
					if digest(t, dev) != before {
						t.Error("a config that is not authenticated changed the volume")
					}
					if strings.Join(r.Sync.Skipped, "|") != strings.Join(tc.skipped, "|") || len(r.Sync.Problems) != 1 ||
						!strings.Contains(r.Sync.String(), "config from cryptinit.config=PARTLABEL=ESP:/c.yaml is not authenticated") {
						t.Errorf("report: %v, skipped %q", r.Sync, r.Sync.Skipped)
					}
					return
				}
				if len(r.Sync.Problems) != 0 || len(r.Sync.Skipped) != 0 {
					t.Errorf("authenticated sync: %v", r.Sync)
				}
				if got := slotsOf(t, dev); !equalInts(got, tc.slots) {
					t.Errorf("slots %v, want %v", got, tc.slots)
				}
				if tc.recovery {
					hdr, _ := luks2.ReadHeader(dev)
					if !strings.Contains(string(hdr.Tokens[1].Raw), "recovery") {
						t.Errorf("slot 1 not marked as recovery: %s", hdr.Tokens[1].Raw)
					}
				}
			})
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
