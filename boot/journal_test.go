package boot

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// endFailsFor is a format journal whose clear fails for one volume.
type endFailsFor struct {
	*meta.Journal
	volume string
}

func (j endFailsFor) End(id string) error {
	if id == j.volume {
		return errors.New("injected META write error")
	}
	return j.Journal.End(id)
}

// TestJournalClearFailureStopsBeforeMkfs: when the format journal's record
// of a finished format cannot be removed, the boot fails on that volume
// before making its filesystem or mounting it (a stale record must never
// sit beside a volume in use).
func TestJournalClearFailureStopsBeforeMkfs(t *testing.T) {
	n := newNode(t, standardParts())
	mf, err := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	b := n.boot(t.TempDir(), basicConfig, "")
	b.NewUnlocker = func(env keys.Env, _ *console.Logger) Unlocker {
		return &unlock.Engine{Env: env, Journal: endFailsFor{&meta.Journal{Dev: mf}, "EPHEMERAL"}}
	}
	_, err = b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || !strings.Contains(err.Error(), "EPHEMERAL") {
		t.Fatalf("boot: %v\n%s", err, n.con.String())
	}
	for _, m := range n.mkfs {
		if strings.HasPrefix(m, "EPHEMERAL:") {
			t.Errorf("mkfs ran on EPHEMERAL: %v", n.mkfs)
		}
	}
	for _, c := range n.mounts {
		if strings.Contains(c.source, "EPHEMERAL") {
			t.Errorf("EPHEMERAL mounted: %+v", c)
		}
	}
	if r, _ := (&meta.Journal{Dev: mf}).Record("EPHEMERAL"); r == nil {
		t.Error("the record is gone, yet its clear failed")
	}
}
