package boot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	root := t.TempDir()
	b := n.boot(root, basicConfig, "")
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

	// Boot 2: the clear works again. The open removes the record of the
	// complete format, and since the volume holds no signature at all the
	// boot makes the filesystem boot 1 never made.
	n.mounts, n.mkfs = nil, nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	if !slices.Contains(n.mkfs, "EPHEMERAL:xfs") {
		t.Errorf("second boot made no filesystem on EPHEMERAL: %v\n%s", n.mkfs, n.con.String())
	}
	if r, _ := (&meta.Journal{Dev: mf}).Record("EPHEMERAL"); r != nil {
		t.Errorf("record left after the second boot: %+v", r)
	}
	// Boot 3: a volume with a filesystem is never made again.
	n.mounts, n.mkfs = nil, nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil || len(n.mkfs) != 0 {
		t.Fatalf("third boot: %v, mkfs %v\n%s", err, n.mkfs, n.con.String())
	}
}

// TestFormatCompletedNeverMkfsOverASignature: after a boot stopped on a
// failed journal clear, the next boot makes a filesystem on the opened
// volume only when it carries no signature at all: one that holds a
// filesystem (or anything else) keeps it.
func TestFormatCompletedNeverMkfsOverASignature(t *testing.T) {
	for _, tc := range []struct {
		name, sig string
		off       int64
		wantErr   string // "" : the boot succeeds
	}{
		{name: "xfs", sig: "XFSB", off: 0},
		{name: "luks", sig: "LUKS\xba\xbe\x00\x02", off: 0, wantErr: "EPHEMERAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, standardParts())
			mf, err := os.OpenFile(n.parts["META"], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer mf.Close()
			root := t.TempDir()
			b := n.boot(root, basicConfig, "")
			b.NewUnlocker = func(env keys.Env, _ *console.Logger) Unlocker {
				return &unlock.Engine{Env: env, Journal: endFailsFor{&meta.Journal{Dev: mf}, "EPHEMERAL"}}
			}
			if _, err := b.Run(context.Background()); err == nil {
				t.Fatal("first boot did not stop on the failed clear")
			}
			// what lands on the volume before the next boot
			mapped := filepath.Join(n.dir, "luks2-EPHEMERAL")
			if err := os.WriteFile(mapped, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Truncate(mapped, 2<<20)
			wf, err := os.OpenFile(mapped, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			wf.WriteAt([]byte(tc.sig), tc.off)
			wf.Close()

			n.mounts, n.mkfs = nil, nil
			_, err = n.boot(root, basicConfig, "").Run(context.Background())
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("second boot: %v, want error %q\n%s", err, tc.wantErr, n.con.String())
			}
			for _, m := range n.mkfs {
				if strings.HasPrefix(m, "EPHEMERAL:") {
					t.Errorf("mkfs over a %s signature: %v", tc.name, n.mkfs)
				}
			}
			got := make([]byte, len(tc.sig))
			rf, _ := os.Open(mapped)
			rf.ReadAt(got, tc.off)
			rf.Close()
			if string(got) != tc.sig {
				t.Errorf("the %s signature was overwritten: %q", tc.name, got)
			}
		})
	}
}

// failingMkfs fails to make the filesystem of one volume, as a power loss
// between the format and mkfs would leave it.
type failingMkfs struct {
	*node
	label string
}

func (m failingMkfs) Make(ctx context.Context, fstype, dev, label string) error {
	if label == m.label {
		return errors.New("injected mkfs failure")
	}
	return m.node.Make(ctx, fstype, dev, label)
}

// TestStopBetweenFormatAndMkfsRecovers: a boot that formats EPHEMERAL
// and stops before its filesystem exists (mkfs failed; a crash there or
// in the sync is the same) keeps the journal record, so the next boot
// opens the volume, sees it holds no signature, makes the filesystem and
// only then removes the record.
func TestStopBetweenFormatAndMkfsRecovers(t *testing.T) {
	n := newNode(t, standardParts())
	root := t.TempDir()
	b := n.boot(root, basicConfig, "")
	b.Mkfs = failingMkfs{n, "EPHEMERAL"}
	if _, err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "injected mkfs failure") {
		t.Fatalf("first boot: %v\n%s", err, n.con.String())
	}
	record := func() *meta.Record {
		mf, err := os.Open(n.parts["META"])
		if err != nil {
			t.Fatal(err)
		}
		defer mf.Close()
		r, err := (&meta.Journal{Dev: readOnlyFile{mf}}).Record("EPHEMERAL")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := record(); r == nil {
		t.Fatal("no journal record left beside a volume that has no filesystem")
	}

	n.mounts, n.mkfs = nil, nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, n.con.String())
	}
	if !slices.Contains(n.mkfs, "EPHEMERAL:xfs") {
		t.Errorf("second boot made no filesystem on EPHEMERAL: %v\n%s", n.mkfs, n.con.String())
	}
	if r := record(); r != nil {
		t.Errorf("record left after the filesystem was made: %+v", r)
	}
	n.mounts, n.mkfs = nil, nil
	if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil || len(n.mkfs) != 0 {
		t.Fatalf("third boot: %v, mkfs %v\n%s", err, n.mkfs, n.con.String())
	}
}

// readOnlyFile is a META partition the test only reads.
type readOnlyFile struct{ *os.File }

func (readOnlyFile) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read only") }
