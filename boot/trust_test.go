package boot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// planted is a static key that whoever holds the disk adds to a config.
const planted = "    - static:\n        passphrase: planted\n      slot: 5\n"

// basicWith is basicConfig with the planted key added to volume id's keys.
func basicWith(id string) string {
	docs := strings.Split(basicConfig, "---\n")
	for i, d := range docs {
		if strings.Contains(d, "\nname: "+id+"\n") || (id == "u-data" && strings.Contains(d, "\nname: data\n")) {
			docs[i] = strings.Replace(d, cheapKDF, planted+cheapKDF, 1)
		}
	}
	return strings.Join(docs, "---\n")
}

// withESP adds an ESP partition holding cfg at /c.yaml (the fake mount
// leaves ConfigSrcDir as it is: the file is put there).
func (n *node) withESP(t *testing.T, root, cfg string) {
	t.Helper()
	p := filepath.Join(n.dir, "ESP")
	if err := os.WriteFile(p, []byte("XFSB"), 0o600); err != nil { // stands in for the ESP's filesystem
		t.Fatal(err)
	}
	os.Truncate(p, 1<<20)
	n.parts["ESP"] = p
	os.MkdirAll(filepath.Join(root, ConfigSrcDir), 0o755)
	if err := os.WriteFile(filepath.Join(root, ConfigSrcDir, "c.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func slotsOn(t *testing.T, path string) map[int]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr, err := luks2.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	s := map[int]bool{}
	for id := range hdr.Keyslots {
		s[id] = true
	}
	return s
}

// TestConfigTrustPerSource is issue 10 defect 10 at boot level: after a
// first boot with the signed image's config, a second boot gets a config
// that adds the planted static key to a volume, from each source in turn.
// Only the embedded config, a path in the initramfs and the copy on a
// STATE a tpm key opened may enroll it; a config from a partition (ESP),
// META tag 9, or a copy on a STATE that tag 9's key opened or that is
// plain opens the volume and changes nothing, and the console says why.
func TestConfigTrustPerSource(t *testing.T) {
	cases := []struct {
		name    string
		volume  string // gets the planted key
		enrolls bool
		setup   func(t *testing.T, n *node, root string) *Boot
	}{
		{"embedded", "STATE", true, func(t *testing.T, n *node, root string) *Boot {
			return n.boot(root, basicWith("STATE"), "")
		}},
		{"cmdline path in the initramfs", "EPHEMERAL", true, func(t *testing.T, n *node, root string) *Boot {
			os.WriteFile(filepath.Join(root, "c.yaml"), []byte(basicWith("EPHEMERAL")), 0o600)
			return n.boot(root, "", "cryptinit.config=/c.yaml")
		}},
		{"cmdline partition", "STATE", false, func(t *testing.T, n *node, root string) *Boot {
			n.withESP(t, root, basicWith("STATE"))
			return n.boot(root, basicConfig, "cryptinit.config=PARTLABEL=ESP:/c.yaml")
		}},
		{"cmdline partition, EPHEMERAL", "EPHEMERAL", false, func(t *testing.T, n *node, root string) *Boot {
			n.withESP(t, root, basicWith("EPHEMERAL"))
			return n.boot(root, "", "cryptinit.config=PARTLABEL=ESP:/c.yaml")
		}},
		{"META tag 9", "STATE", false, func(t *testing.T, n *node, root string) *Boot {
			mf, _ := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
			defer mf.Close()
			m, err := meta.Read(mf)
			if err != nil {
				t.Fatal(err)
			}
			m.Set(meta.TagStateEncryptionConfig, []byte(`{"EncryptionProvider":"luks2","EncryptionKeys":[`+
				`{"KeySlot":0,"KeyNodeID":{}},{"KeySlot":5,"KeyStatic":{"KeyData":"planted"}}]}`))
			if err := m.Write(mf); err != nil {
				t.Fatal(err)
			}
			return n.boot(root, "", "")
		}},
		// STATE opened by its nodeID key from tag 9: whoever holds the
		// disk could have put that STATE (and its key in tag 9) there
		{"copy on STATE opened from tag 9", "EPHEMERAL", false, func(t *testing.T, n *node, root string) *Boot {
			writeCopy(t, root, basicWith("EPHEMERAL"))
			return n.boot(root, "", "")
		}},
		// STATE replaced by a plain filesystem carrying a copy
		{"copy on a plain STATE", "EPHEMERAL", false, func(t *testing.T, n *node, root string) *Boot {
			deleteTag9(t, n)
			os.Truncate(n.parts["STATE"], 0)
			os.Truncate(n.parts["STATE"], 20<<20)
			f, _ := os.OpenFile(n.parts["STATE"], os.O_WRONLY, 0)
			f.WriteAt([]byte("XFSB"), 0)
			f.Close()
			writeCopy(t, root, basicWith("EPHEMERAL"))
			return n.boot(root, "", "")
		}},
		// STATE opened by a tpm key: it is the node's own STATE
		{"copy on STATE opened by tpm", "EPHEMERAL", true, func(t *testing.T, n *node, root string) *Boot {
			writeCopy(t, root, basicWith("EPHEMERAL"))
			b := n.boot(root, "", "")
			b.NewUnlocker = stateOpenedBy(config.KindTPM)
			return b
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, standardParts())
			root := t.TempDir()
			if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
				t.Fatalf("first boot: %v\n%s", err, n.con.String())
			}
			b := tc.setup(t, n, root)
			tag9 := readTag9(t, n)
			if _, err := b.Run(context.Background()); err != nil {
				t.Fatalf("second boot: %v\n%s", err, n.con.String())
			}
			out := n.con.String()
			if got := slotsOn(t, n.parts[tc.volume])[5]; got != tc.enrolls {
				t.Errorf("%s slot 5 enrolled: %v, want %v\n%s", tc.volume, got, tc.enrolls, out)
			}
			refused := tc.volume + ": key slots: skipped: add slot 5 (static)"
			if strings.Contains(out, refused) == tc.enrolls || strings.Contains(out, "is not authenticated") == tc.enrolls {
				t.Errorf("console (want the refusal: %v):\n%s", !tc.enrolls, out)
			}
			if got := readTag9(t, n); !tc.enrolls && got != tag9 {
				t.Errorf("an unauthenticated config rewrote META tag 9")
			}
			if strings.Contains(out, "planted") {
				t.Errorf("the passphrase was logged:\n%s", out)
			}
		})
	}
}

// writeCopy puts cfg on STATE as its config copy (the fake mounts leave
// the staging directory as it is).
func writeCopy(t *testing.T, root, cfg string) {
	t.Helper()
	p := filepath.Join(root, StagingDir, "STATE", StateConfigDir, "config.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// readTag9 returns META tag 9 ("" when absent).
func readTag9(t *testing.T, n *node) string {
	t.Helper()
	mf, _ := os.Open(n.parts["META"])
	defer mf.Close()
	m, err := meta.Read(mf)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := m.Get(meta.TagStateEncryptionConfig)
	return string(v)
}

func deleteTag9(t *testing.T, n *node) {
	t.Helper()
	mf, _ := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
	defer mf.Close()
	m, err := meta.Read(mf)
	if err != nil {
		t.Fatal(err)
	}
	m.Delete(meta.TagStateEncryptionConfig)
	if err := m.Write(mf); err != nil {
		t.Fatal(err)
	}
}

// kindEngine is the real engine, except that it reports that STATE was
// opened by a key of kind (the boot sees no more of the key than that).
type kindEngine struct {
	*unlock.Engine
	kind string
}

func (k kindEngine) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	res, err := k.Engine.Unlock(ctx, vol, dev, size)
	if err == nil && vol.ID == config.StateVolume {
		res.Kind = k.kind
	}
	return res, err
}

func stateOpenedBy(kind string) func(keys.Env, *console.Logger) Unlocker {
	return func(env keys.Env, _ *console.Logger) Unlocker {
		return kindEngine{&unlock.Engine{Env: env}, kind}
	}
}

// TestCopyFromPartitionStaysUntrusted: a config from a partition is kept on
// STATE marked as such, so a later boot that falls back to the copy still
// refuses its slot changes, even on a STATE a tpm key opened (which alone
// would make the copy trusted); the signed image's config clears the mark.
func TestCopyFromPartitionStaysUntrusted(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	n.withESP(t, root, basicWith("EPHEMERAL"))
	for i := 0; i < 2; i++ { // from the ESP, then from the copy it left
		cl := "cryptinit.config=PARTLABEL=ESP:/c.yaml"
		if i == 1 {
			cl = ""
		}
		b := n.boot(root, "", cl)
		b.NewUnlocker = stateOpenedBy(config.KindTPM)
		if _, err := b.Run(context.Background()); err != nil {
			t.Fatalf("boot %d: %v\n%s", i+2, err, n.con.String())
		}
		if slotsOn(t, n.parts["EPHEMERAL"])[5] {
			t.Fatalf("boot %d enrolled the planted key:\n%s", i+2, n.con.String())
		}
	}
	if !strings.Contains(n.con.String(), "copy on STATE (cryptinit/config.yaml), saved from cryptinit.config=PARTLABEL=ESP:/c.yaml is not authenticated") {
		t.Errorf("the copy's source is not named:\n%s", n.con.String())
	}
	// the signed image's config (the same bytes) makes the copy trusted again
	embedded := basicWith("EPHEMERAL")
	if _, err := n.boot(root, embedded, "").Run(context.Background()); err != nil {
		t.Fatalf("embedded boot: %v\n%s", err, n.con.String())
	}
	if !slotsOn(t, n.parts["EPHEMERAL"])[5] {
		t.Errorf("the embedded config did not enroll slot 5:\n%s", n.con.String())
	}
	if _, err := os.Stat(filepath.Join(root, StagingDir, "STATE", StateConfigDir, StateConfigUntrusted)); !os.IsNotExist(err) {
		t.Errorf("the mark is still there after the embedded config was saved: %v", err)
	}
}

// TestNoFormatFromUnauthenticatedConfig: on an empty disk, neither a config
// on a partition nor META tag 9 alone formats a volume (a format chooses
// its keys); STATE stays all zeros and the banner says why.
func TestNoFormatFromUnauthenticatedConfig(t *testing.T) {
	for _, src := range []string{"partition", "META tag 9"} {
		t.Run(src, func(t *testing.T) {
			n := newNode(t, standardParts())
			root := t.TempDir()
			var b *Boot
			if src == "partition" {
				n.withESP(t, root, basicConfig)
				b = n.boot(root, "", "cryptinit.config=PARTLABEL=ESP:/c.yaml")
			} else {
				mf, _ := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
				m := meta.New()
				m.Set(meta.TagStateEncryptionConfig, []byte(`{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyStatic":{"KeyData":"planted"}}]}`))
				if err := m.Write(mf); err != nil {
					t.Fatal(err)
				}
				mf.Close()
				b = n.boot(root, "", "")
			}
			_, err := b.Run(context.Background())
			var f *Fatal
			if !errors.As(err, &f) || f.Failure.Volume != "STATE" || !errors.Is(f.Failure.Reason, unlock.ErrFormatNotAuthenticated) ||
				!strings.Contains(f.Failure.Reason.Error(), "is not authenticated") {
				t.Fatalf("got %v\n%s", err, n.con.String())
			}
			data, _ := os.ReadFile(n.parts["STATE"])
			for _, c := range data {
				if c != 0 {
					t.Fatal("STATE was written")
				}
			}
			if len(n.mkfs) != 0 {
				t.Errorf("mkfs ran: %v", n.mkfs)
			}
		})
	}
}

// TestWipeRequestNeedsAuthenticatedConfig: a wipe request is acted on only
// when the config that formats the volume again is authenticated; else the
// boot warns (volume, config source, what to do), wipes nothing, leaves the
// request in META and goes on. The signed image's config then acts on it.
func TestWipeRequestNeedsAuthenticatedConfig(t *testing.T) {
	cases := []struct {
		name, volume, source string
		setup                func(t *testing.T, n *node, root string) *Boot
	}{
		{"STATE from tag 9", "STATE", "META tag 9", func(t *testing.T, n *node, root string) *Boot {
			return n.boot(root, "", "")
		}},
		{"EPHEMERAL from an ESP config", "EPHEMERAL", "cryptinit.config=PARTLABEL=ESP:/c.yaml", func(t *testing.T, n *node, root string) *Boot {
			n.withESP(t, root, basicConfig)
			return n.boot(root, "", "cryptinit.config=PARTLABEL=ESP:/c.yaml")
		}},
		{"EPHEMERAL from the copy on STATE", "EPHEMERAL", "copy on STATE", func(t *testing.T, n *node, root string) *Boot {
			return n.boot(root, "", "")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, standardParts())
			root := t.TempDir()
			if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
				t.Fatalf("first boot: %v\n%s", err, n.con.String())
			}
			uuid := luksUUID(t, n.parts[tc.volume])
			mf, _ := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
			m, err := meta.Read(mf)
			if err != nil {
				t.Fatal(err)
			}
			if err := meta.RequestWipe(m, meta.WipeRequest{Volume: tc.volume, LUKSUUID: uuid}); err != nil {
				t.Fatal(err)
			}
			if err := m.Write(mf); err != nil {
				t.Fatal(err)
			}
			mf.Close()
			pending := func() int {
				mf, _ := os.Open(n.parts["META"])
				defer mf.Close()
				m, _ := meta.Read(mf)
				w, _ := meta.WipeRequests(m)
				return len(w)
			}

			n.mkfs = nil
			if _, err := tc.setup(t, n, root).Run(context.Background()); err != nil {
				t.Fatalf("boot with the request: %v\n%s", err, n.con.String())
			}
			out := n.con.String()
			if got := luksUUID(t, n.parts[tc.volume]); got != uuid || len(n.mkfs) != 0 || strings.Contains(out, "meta: wiped") {
				t.Fatalf("%s wiped (LUKS UUID %s, was %s; mkfs %v):\n%s", tc.volume, got, uuid, n.mkfs, out)
			}
			if pending() != 1 {
				t.Errorf("the request left META")
			}
			warn := "META asks to wipe " + tc.volume
			if !strings.Contains(out, warn) || !strings.Contains(out, tc.source) || !strings.Contains(out, "is not authenticated: not wiped") ||
				!strings.Contains(out, "cancel-wipe --volume "+tc.volume) {
				t.Errorf("no warning naming %s, %s and what to do:\n%s", tc.volume, tc.source, out)
			}
			if tc.volume == "STATE" {
				return // formatting STATE again loses EPHEMERAL's lockToSTATE key: TestLockedToWipedState
			}
			if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
				t.Fatalf("boot with the signed image's config: %v\n%s", err, n.con.String())
			}
			if !strings.Contains(n.con.String(), "meta: wiped "+tc.volume) || pending() != 0 || luksUUID(t, n.parts[tc.volume]) == uuid {
				t.Errorf("the signed image's config did not act on the request:\n%s", n.con.String())
			}
		})
	}
}
