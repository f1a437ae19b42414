package boot

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// luksUUID reads the UUID of the LUKS header on the image at path.
func luksUUID(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.ReadHeader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h.UUID
}

// TestUserTag12NeverWipes: tags 12 and 13 belong to Talos's users. A
// user's "STATE" in tag 12 (where cryptinit once kept its wipe request)
// wipes nothing, and a user's "EPHEMERAL" in tag 13 (its old format
// journal) redoes no format; both are reported once and left as they were.
func TestUserTag12NeverWipes(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	uuids := map[string]string{}
	for _, id := range []string{"STATE", "EPHEMERAL", "u-data"} {
		uuids[id] = luksUUID(t, n.parts[id])
	}
	mf, err := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := meta.Read(mf)
	if err != nil {
		t.Fatal(err)
	}
	m.Set(12, []byte("STATE\n"))
	m.Set(13, []byte("EPHEMERAL\n"))
	if err := m.Write(mf); err != nil {
		t.Fatal(err)
	}
	mf.Close()

	for boot := 2; boot <= 3; boot++ {
		n.mkfs = nil
		if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
			t.Fatalf("boot %d: %v\n%s", boot, err, n.con.String())
		}
		out := n.con.String()
		if len(n.mkfs) != 0 || strings.Contains(out, "meta: wiped") {
			t.Fatalf("boot %d: a user's value in tag 12/13 wiped or formatted %v:\n%s", boot, n.mkfs, out)
		}
		for id, u := range uuids {
			if got := luksUUID(t, n.parts[id]); got != u {
				t.Fatalf("boot %d: %s has LUKS UUID %s, was %s", boot, id, got, u)
			}
		}
		for _, tag := range []string{"META tag 12 holds", "META tag 13 holds"} {
			if c := strings.Count(out, tag); c != 1 {
				t.Errorf("boot %d: %q logged %d times, want once:\n%s", boot, tag, c, out)
			}
		}
		mf, _ := os.Open(n.parts["META"])
		m, err := meta.Read(mf)
		mf.Close()
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := m.Get(12); string(v) != "STATE\n" {
			t.Errorf("boot %d: tag 12 = %q, want the user's \"STATE\\n\"", boot, v)
		}
		if v, _ := m.Get(13); string(v) != "EPHEMERAL\n" {
			t.Errorf("boot %d: tag 13 = %q, want the user's \"EPHEMERAL\\n\"", boot, v)
		}
	}
}
