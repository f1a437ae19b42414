package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock/config"
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

// rawTag is one META record as a writer put it on disk.
type rawTag struct {
	tag   uint32
	value string
}

// writeRawMETA writes both copies of a META holding tags in the given
// order, as Talos does (it writes its map's order, not ascending), with the
// ADV framing from compat-formats.md.
func writeRawMETA(t *testing.T, path string, tags []rawTag) {
	t.Helper()
	buf := make([]byte, meta.CopySize)
	binary.BigEndian.PutUint32(buf, 0x5A4B3C2D)
	off := 4
	for _, r := range tags {
		binary.BigEndian.PutUint32(buf[off:], r.tag)
		binary.BigEndian.PutUint32(buf[off+4:], uint32(len(r.value)))
		off += 8 + copy(buf[off+8:], r.value)
	}
	binary.BigEndian.PutUint32(buf[meta.CopySize-4:], 0xA5B4C3D2)
	h := sha256.New()
	h.Write(buf[:meta.CopySize-36])
	h.Write(make([]byte, 32))
	h.Write(buf[meta.CopySize-4:])
	copy(buf[meta.CopySize-36:], h.Sum(nil))
	img := append(bytes.Clone(buf), buf...)
	img = append(img, make([]byte, meta.Size-len(img))...)
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readMETA(t *testing.T, path string) *meta.Meta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := meta.Read(f)
	if err != nil {
		t.Fatalf("META: %v", err)
	}
	return m
}

// gptNode is a node whose partitions sit on one disk with a GPT, so that
// the boot can read their partition GUIDs.
type gptNode struct {
	*node
	disk  string         // the disk image: just the GPT, the partitions are n.parts
	partN map[string]int // label -> partition number
}

// partGUIDs are the partition GUIDs of the gptNode disk.
var partGUIDs = map[string]string{
	"META":      "1f9d1f38-8d4e-4b2b-9d3c-0e1c7e0c2f11",
	"STATE":     "2a2b2c2d-3e3f-4041-8243-444546474849",
	"EPHEMERAL": "a19d880f-05fc-4d3b-a006-743f0f84911e",
	"u-data":    "5c5d5e5f-6061-4263-a465-666768696a6b",
	"ROOT":      "7a7b7c7d-7e7f-4081-8283-848586878889",
}

func newGPTNode(t *testing.T) *gptNode {
	n := newNode(t, standardParts())
	g := &gptNode{node: n, disk: filepath.Join(n.dir, "disk"), partN: map[string]int{}}
	d, err := diskfs.Create(g.disk, 8<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	for i, l := range []string{"META", "STATE", "EPHEMERAL", "u-data", "ROOT"} {
		start := uint64(2048 * (i + 1))
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: start, End: start + 2047,
			Size: 1 << 20, Type: gpt.LinuxFilesystem, Name: l, GUID: partGUIDs[l]})
		g.partN[l] = i + 1
	}
	if err := d.Partition(table); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *gptNode) Wait(ctx context.Context, required []string, timeout time.Duration) (*devices.Found, error) {
	f, err := g.node.Wait(ctx, required, timeout)
	if f != nil {
		f.All = append(f.All, devices.Block{Name: "vdz", DevType: "disk", Path: g.disk})
		for l, b := range f.ByLabel {
			b.Disk, b.PartN = "vdz", g.partN[l]
			f.ByLabel[l] = b
			f.All = append(f.All, b)
		}
	}
	return f, err
}

func (g *gptNode) boot(root, cfg, cl string) *Boot {
	b := g.node.boot(root, cfg, cl)
	b.Devices = g
	return b
}

// TestBootLeavesOthersTags: the boot's META handling (the wipe request, the
// format journal, tag 9 from a machine config) changes only cryptinit's
// tags (0xC1, 0xC2) and tag 9 where the machine config says so; every other
// tag of a Talos-made META, written in Talos's order, keeps its value byte
// for byte, and no tag appears or disappears.
func TestBootLeavesOthersTags(t *testing.T) {
	g := newGPTNode(t)
	talos := []rawTag{
		{16, "talos-unique-machine-token"},
		{12, "STATE\n"},
		{200, "\x00\x01odd tag\xff"},
		{9, `{"EncryptionProvider":"luks2","EncryptionKeys":[{"KeySlot":0,"KeyNodeID":{}}]}`},
		{18, `[{"disk":"/dev/vdb"}]`},
		{15, "0f0e0d0c-0b0a-4908-8706-050403020100"},
		{13, "EPHEMERAL"},
		{17, "sd-boot"},
		{14, "u-data\n"},
		{10, "{}"},
	}
	writeRawMETA(t, g.parts["META"], talos)
	cfg, err := config.Parse([]byte(basicConfig))
	if err != nil {
		t.Fatal(err)
	}
	want9, err := meta.EncodeStateConfig(cfg.Volume(config.StateVolume).Encryption)
	if err != nil {
		t.Fatal(err)
	}
	ours := map[uint32]bool{meta.TagWipeRequest: true, meta.TagFormatJournal: true}
	check := func(when string) *meta.Meta {
		t.Helper()
		m := readMETA(t, g.parts["META"])
		var set []uint32
		for _, tg := range m.Tags() {
			if !ours[tg] {
				set = append(set, tg)
			}
		}
		if len(set) != len(talos) {
			t.Errorf("%s: tags %v, want Talos's %d tags and no other", when, m.Tags(), len(talos))
		}
		for _, r := range talos {
			v, ok := m.Get(r.tag)
			if r.tag == meta.TagStateEncryptionConfig {
				if !bytes.Equal(v, want9) {
					t.Errorf("%s: tag 9 = %s, want the machine config's %s", when, v, want9)
				}
				continue
			}
			if !ok || string(v) != r.value {
				t.Errorf("%s: tag %d = %q (set %v), want %q", when, r.tag, v, ok, r.value)
			}
		}
		return m
	}

	root := t.TempDir()
	if _, err := g.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("first boot: %v\n%s", err, g.con.String())
	}
	if len(g.mkfs) != 3 {
		t.Fatalf("first boot formatted %v, want 3 volumes", g.mkfs)
	}
	m := check("after the first boot (formats, tag 9)")

	// Ask for EPHEMERAL by partition GUID, and for u-data at a partition it
	// is not on.
	mf, _ := os.OpenFile(g.parts["META"], os.O_RDWR, 0)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(meta.RequestWipe(m, meta.WipeRequest{Volume: "EPHEMERAL", PartUUID: partGUIDs["EPHEMERAL"]}))
	must(meta.RequestWipe(m, meta.WipeRequest{Volume: "u-data", PartUUID: partGUIDs["EPHEMERAL"]}))
	must(m.Write(mf))
	mf.Close()
	ephUUID, dataUUID := luksUUID(t, g.parts["EPHEMERAL"]), luksUUID(t, g.parts["u-data"])

	g.mkfs = nil
	if _, err := g.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("second boot: %v\n%s", err, g.con.String())
	}
	out := g.con.String()
	if strings.Join(g.mkfs, ",") != "EPHEMERAL:xfs" || luksUUID(t, g.parts["EPHEMERAL"]) == ephUUID {
		t.Errorf("EPHEMERAL not wiped and formatted again (mkfs %v):\n%s", g.mkfs, out)
	}
	if luksUUID(t, g.parts["u-data"]) != dataUUID {
		t.Error("u-data was wiped by a request for another partition")
	}
	wiped := "meta: wiped EPHEMERAL (vd-EPHEMERAL), reason: wipe request in META for PARTUUID=" + partGUIDs["EPHEMERAL"]
	if strings.Count(out, "meta: wiped") != 1 || !strings.Contains(out, wiped) || !strings.Contains(out, "erased: zeroed the first 4 MiB") {
		t.Errorf("want one wipe line %q...:\n%s", wiped, out)
	}
	mismatch := "META asks to wipe u-data at PARTUUID=" + partGUIDs["EPHEMERAL"] + ", but the partition found for u-data has PARTUUID=" + partGUIDs["u-data"] + ", LUKS UUID=" + dataUUID
	if !strings.Contains(out, mismatch) {
		t.Errorf("no warning %q:\n%s", mismatch, out)
	}
	m = check("after the second boot (wipe request, format journal)")
	reqs, err := meta.WipeRequests(m)
	if err != nil || len(reqs) != 1 || reqs[0].Volume != "u-data" {
		t.Errorf("requests left %+v %v, want the u-data one that did not match", reqs, err)
	}

	// The request that does not match is reported again on the next boot,
	// and nothing at all is written to META.
	before, _ := os.ReadFile(g.parts["META"])
	g.mkfs = nil
	if _, err := g.boot(root, basicConfig, "").Run(context.Background()); err != nil {
		t.Fatalf("third boot: %v\n%s", err, g.con.String())
	}
	if out := g.con.String(); !strings.Contains(out, mismatch) || strings.Contains(out, "meta: wiped") || len(g.mkfs) != 0 {
		t.Errorf("third boot: want the warning again and no wipe (mkfs %v):\n%s", g.mkfs, out)
	}
	if after, _ := os.ReadFile(g.parts["META"]); !bytes.Equal(before, after) {
		t.Error("third boot rewrote META")
	}
}
