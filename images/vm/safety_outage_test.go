package vm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/meta"
)

// partition reads one partition of a disk image on the host, as an
// io.ReaderAt (luks2.ReadHeader takes one).
type partition struct {
	d     *Disk
	label string
}

func (p partition) ReadAt(b []byte, off int64) (int, error) {
	if err := p.d.ReadAt(p.label, b, off); err != nil {
		return 0, err
	}
	return len(b), nil
}

// partitionHash is the SHA-256 of the whole partition labelled label.
func partitionHash(t *testing.T, d *Disk, label string) string {
	t.Helper()
	var size int64
	for _, p := range d.Partitions {
		if p.Label == label {
			size = p.Size
		}
	}
	h := sha256.New()
	buf := make([]byte, 4*MiB)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := d.ReadAt(label, buf, off); err != nil {
			t.Fatalf("read %s of %s at %d: %v", label, d.Path, off, err)
		}
		h.Write(buf)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// journalRecord is volumeID's record in the format journal (META tag
// 0xC2) of the node's first disk, nil when there is none.
func journalRecord(t *testing.T, n *Node, volumeID string) *meta.Record {
	t.Helper()
	buf := make([]byte, meta.Size)
	if err := n.Disks[0].ReadAt("META", buf, 0); err != nil {
		t.Fatal(err)
	}
	r, err := meta.NewJournal(readOnly{bytes.NewReader(buf)}, nil).Record(volumeID)
	if err != nil {
		t.Fatalf("format journal in META: %v", err)
	}
	return r
}

// readOnly is a META partition read into memory; the journal only reads it.
type readOnly struct{ io.ReaderAt }

func (readOnly) WriteAt([]byte, int64) (int, error) { return 0, errors.New("read-only META") }

// wipeLines matches any console line that says a volume was wiped: the
// engine's redo line ("redoing an interrupted format: wiping it ...
// erased ...") and the old engine's ("redoing an interrupted format").
var wipeLines = regexp.MustCompile(`(?im)^.*(redoing an interrupted format|wiping|erased).*$`)

// TestVMKMSOutageKeepsVolume is issue 10 defect 1 on a real boot: a format
// journal record can outlive a finished format (its clear failed), and a
// key outage must not make the boot take the volume for an unfinished
// format. Boot 1 (configs/kms.yaml, KMS up) formats STATE and EPHEMERAL and
// the real root writes its markers. On the host, META tag 0xC2 then gets a
// record for STATE naming the LUKS UUID on the disk at stage "header", as
// a failed clear leaves it. Boot 2, with the KMS server stopped, fails on
// STATE with a banner naming the endpoint; STATE's bytes are unchanged, no
// line says a wipe happened, and the record is still there. Boot 3, with
// the server back (same keyring, same port), opens STATE, boot 1's marker
// is found, and the record is gone.
func TestVMKMSOutageKeepsVolume(t *testing.T) {
	a := RequireInit(t)
	t.Parallel()
	port, deny, stopKMS := startKMS(t, a)
	cfg := []byte(strings.ReplaceAll(string(ProjectConfig(t, "kms.yaml")), "10.0.2.2:4050", fmt.Sprintf("10.0.2.2:%d", port)))
	n := NewNode(t, a, "kmsoutage", TalosLayout())
	disk := n.Disks[0]

	_, r := n.BootToRoot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 0)
	if rec := journalRecord(t, n, "STATE"); rec != nil {
		t.Fatalf("after a finished format the journal still holds %+v", *rec)
	}

	// What a failed journal clear leaves: STATE's record at stage
	// "header", naming the header now on the disk.
	hdr, err := luks2.ReadHeader(partition{disk, "STATE"})
	if err != nil {
		t.Fatalf("STATE after boot 1: %v", err)
	}
	if _, ok := hdr.Tokens[0]; !ok {
		t.Fatalf("STATE after boot 1 has no token 0 (the kms key's); keyslots %v", hdr.Keyslots)
	}
	err = disk.EditPartition("META", func(file string) error {
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		j := meta.NewJournal(f, nil)
		if err := j.Begin(meta.Record{Volume: "STATE", UUID: hdr.UUID, Slot: 0, Token: true}); err != nil {
			return err
		}
		return j.Advance("STATE", meta.StageHeader)
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec := journalRecord(t, n, "STATE"); rec == nil || rec.UUID != hdr.UUID || rec.Stage != meta.StageHeader {
		t.Fatalf("journal record written on the host reads back as %+v", rec)
	}
	before := partitionHash(t, disk, "STATE")

	// KMS down: STATE's only key is unavailable. The banner names the
	// endpoint; nothing is written to STATE.
	stopKMS()
	vm := n.Boot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail + " cryptinit.prompt-timeout=0"})
	_, line := vm.Expect(BootTimeout, `^`+PatFail+`STATE: `, PatRootDone)
	if strings.HasPrefix(line, RootLinePrefix) {
		t.Fatalf("a node whose only STATE key is kms booted with the KMS down")
	}
	_, reason := vm.Expect(30*time.Second, fmt.Sprintf(`slot 0 \(kms\): .*10\.0\.2\.2:%d`, port))
	t.Logf("KMS down: %s /%s", line, strings.TrimPrefix(strings.TrimSpace(reason), "cryptinit:"))
	vm.Wait(BootTimeout)
	if w := wipeLines.FindAllString(vm.Console.Text(), -1); len(w) > 0 {
		t.Errorf("boot 2 (KMS down) said it wiped:\n%s", strings.Join(w, "\n"))
	}
	if after := partitionHash(t, disk, "STATE"); after != before {
		t.Errorf("STATE changed during the KMS outage: sha256 %s before, %s after", before, after)
	}
	if after, err := luks2.ReadHeader(partition{disk, "STATE"}); err != nil || after.UUID != hdr.UUID {
		t.Errorf("STATE's header after the KMS outage: %v (UUID %s before)", err, hdr.UUID)
	}
	if rec := journalRecord(t, n, "STATE"); rec == nil || rec.UUID != hdr.UUID {
		t.Errorf("the refused boot changed the journal record: %+v", rec)
	}
	mustSay(t, vm, `format journal names this volume; its format is not redone`)

	// KMS back: STATE opens with its kms key, boot 1's marker is there,
	// and the record of the finished format is cleared.
	serveKMS(t, filepath.Join(a.Dir, "bin", "kms-server"), filepath.Dir(deny), port)
	vm, r = n.BootToRoot(BootOptions{Config: cfg, Net: true, Cmdline: fastFail})
	mustStateAndEphemeral(t, r, 1)
	mustSay(t, vm, `STATE: opened with slot 0 \(kms`)
	if rec := journalRecord(t, n, "STATE"); rec != nil {
		t.Errorf("after STATE opened the journal still holds %+v", *rec)
	}
}
