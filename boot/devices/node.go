package devices

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
)

// The node's own disk. A label is a name anyone can write on a USB stick,
// so META, STATE and EPHEMERAL (and user volumes whose config does not
// name a disk) are taken from one disk only, the node's:
//
//  1. the disk holding the partition systemd-stub booted the UKI from
//     (LoaderDevicePartUUID), when that disk carries a system label;
//  2. else the one disk holding META;
//  3. else the one disk carrying any system label.
//
// When LoaderDevicePartUUID names a partition not seen (yet), no disk is
// chosen (*ESPNotSeenError): the firmware said which disk the node booted
// from, and a stick that enumerated first must not be taken for it.
// Two disks holding META (without 1), two disks carrying system labels
// (without 1 or 2), META off the ESP's disk, or two partitions with one
// label on the node's disk: the boot cannot tell which is the node's and
// refuses (*AmbiguousError). A same-label partition on another disk is
// never opened nor formatted: it is only listed (Selection.Ignored).

// LoaderDevicePartUUIDVar is the efivarfs file in which systemd-stub (and
// systemd-boot) name the partition GUID of the ESP the image was loaded from.
const LoaderDevicePartUUIDVar = "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// ReadLoaderDevicePartUUID reads LoaderDevicePartUUID from efivarfs mounted
// at dir: a 4-byte attribute header, then a UTF-16LE GUID string. It returns
// "" and no error when the variable does not exist (no UEFI, a loader that
// does not set it, an ESP that is not a GPT partition).
func ReadLoaderDevicePartUUID(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, LoaderDevicePartUUIDVar))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read EFI variable LoaderDevicePartUUID: %w", err)
	}
	if len(data) < 4 || len(data)%2 != 0 {
		return "", fmt.Errorf("EFI variable LoaderDevicePartUUID: %d bytes, want a 4-byte header and a UTF-16 string", len(data))
	}
	u := make([]uint16, 0, (len(data)-4)/2)
	for i := 4; i+1 < len(data); i += 2 {
		c := uint16(data[i]) | uint16(data[i+1])<<8
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	s := strings.ToLower(strings.TrimSpace(string(utf16.Decode(u))))
	if !isGUID(s) {
		return "", fmt.Errorf("EFI variable LoaderDevicePartUUID: %q is not a GUID", s)
	}
	return s, nil
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
	}
	return true
}

// IsSystemLabel reports whether a GPT label names a partition of the
// node's own disk in every case: META, STATE, EPHEMERAL.
func IsSystemLabel(l string) bool {
	return l == "META" || l == "STATE" || l == "EPHEMERAL"
}

// IsVolumeLabel reports whether a GPT label is one the node-disk rule
// covers: a system label or a user volume (u-<name>).
func IsVolumeLabel(l string) bool {
	return IsSystemLabel(l) || strings.HasPrefix(l, "u-")
}

// NodeDisk is the disk taken as the node's own, and why.
type NodeDisk struct {
	Known bool   // false when no disk carries a system label
	Disk  string // kernel name, e.g. vdb
	Why   string // for the log line
}

// Candidate is one partition of several that carry a label, as a banner
// lists it.
type Candidate struct {
	Block    Block
	PartUUID string // "" when the disk's GPT could not be read
}

func (c Candidate) String() string {
	id := c.PartUUID
	if id == "" {
		id = "unknown"
	}
	return fmt.Sprintf("%s (disk %s, partition GUID %s)", c.Block.Path, diskName(c.Block), id)
}

// AmbiguousError says the boot cannot tell which partition or disk is the
// node's; it lists every candidate.
type AmbiguousError struct {
	Label      string // the label in question ("" for a disk-level conflict)
	What       string // what is ambiguous
	Candidates []Candidate
}

func (e *AmbiguousError) Error() string {
	var c []string
	for _, x := range e.Candidates {
		c = append(c, x.String())
	}
	return fmt.Sprintf("%s: %s", e.What, strings.Join(c, "; "))
}

// Selection is what the node-disk rule made of a scan.
type Selection struct {
	Node NodeDisk
	// ByLabel holds, for each volume label, the partition to use: the node
	// disk's, or for a user volume in AnyDisk the one partition carrying it.
	ByLabel map[string]Block
	// Ignored lists same-label partitions on other disks: never formatted
	// nor opened.
	Ignored []Block
	// Notes are things the log should say (an ESP disk without system
	// partitions).
	Notes []string
}

// SelectNode applies the node-disk rule to fd. loader is the partition
// GUID from LoaderDevicePartUUID ("" when unknown). anyDisk names the user
// volumes whose config names their disk (a diskSelector): their partition
// may sit on any disk, but only one may carry the label. Partition GUIDs
// are read from the disks only when loader is set or a banner lists
// candidates.
func SelectNode(fd *Found, loader string, anyDisk map[string]bool) (*Selection, error) {
	blocks := fd.labelled()
	guids := &guidCache{blocks: fd.All}
	node, notes, err := chooseNodeDisk(blocks, normID(loader), guids)
	if err != nil {
		return nil, err
	}
	sel := &Selection{Node: node, ByLabel: map[string]Block{}, Notes: notes}
	var labels []string
	seen := map[string]bool{}
	for _, b := range blocks {
		if IsVolumeLabel(b.Label) && !seen[b.Label] {
			seen[b.Label] = true
			labels = append(labels, b.Label)
		}
	}
	for _, l := range labels {
		anywhere := anyDisk[l] && !IsSystemLabel(l)
		var use []Block
		for _, b := range blocks {
			switch {
			case b.Label != l:
			case anywhere || node.Known && b.Disk == node.Disk:
				use = append(use, b)
			default:
				sel.Ignored = append(sel.Ignored, b)
			}
		}
		switch {
		case len(use) == 1:
			sel.ByLabel[l] = use[0]
		case len(use) > 1 && anywhere:
			return nil, &AmbiguousError{Label: l, What: fmt.Sprintf("%d partitions are labelled %s (its config names a disk, so it may be on any, but only one)", len(use), l),
				Candidates: guids.candidates(use, l)}
		case len(use) > 1:
			return nil, &AmbiguousError{Label: l, What: fmt.Sprintf("%d partitions on the node's disk %s are labelled %s", len(use), diskName(use[0]), l),
				Candidates: guids.candidates(use, l)}
		}
	}
	return sel, nil
}

// ESPNotSeenError says LoaderDevicePartUUID names a partition that no
// disk seen has: the disk the UKI was booted from has not appeared (yet),
// so which disk is the node's is not known. The boot waits for it, and at
// its deadline refuses rather than guess.
type ESPNotSeenError struct {
	GUID   string        // the LoaderDevicePartUUID
	Seen   []Block       // every block device seen
	Notes  []string      // disks whose GPT could not be read
	Waited time.Duration // set by the caller that waited
}

func (e *ESPNotSeenError) Error() string {
	var disks []string
	for _, b := range e.Seen {
		if b.DevType == "disk" {
			disks = append(disks, b.Name)
		}
	}
	seen := "no disk at all"
	if len(disks) > 0 {
		seen = "disks " + strings.Join(disks, ", ")
	}
	if len(e.Notes) > 0 {
		seen += " (" + strings.Join(e.Notes, "; ") + ")"
	}
	waited := ""
	if e.Waited > 0 {
		waited = " after " + e.Waited.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("the ESP the UKI booted from (LoaderDevicePartUUID %s) is on no disk seen%s; seen: %s", e.GUID, waited, seen)
}

// chooseNodeDisk decides which disk is the node's (see the rule at the top
// of this file). notes are log lines about a LoaderDevicePartUUID that did
// not decide it.
func chooseNodeDisk(blocks []Block, loader string, guids *guidCache) (NodeDisk, []string, error) {
	systemDisks := map[string]bool{}
	var metaDisks []string
	for _, b := range blocks {
		if !IsSystemLabel(b.Label) {
			continue
		}
		systemDisks[b.Disk] = true
		if b.Label == "META" && !contains(metaDisks, b.Disk) {
			metaDisks = append(metaDisks, b.Disk)
		}
	}
	var notes []string
	if loader != "" {
		esp, ok := guids.block(loader)
		switch {
		case !ok:
			return NodeDisk{}, nil, &ESPNotSeenError{GUID: loader, Seen: guids.blocks, Notes: guids.notes}
		case !systemDisks[esp.Disk]:
			notes = append(notes, fmt.Sprintf("the ESP the UKI booted from (%s, LoaderDevicePartUUID %s) is on disk %s, which holds no system partition; the node's disk is the one holding META", esp.Name, loader, diskName(esp)))
		case len(metaDisks) > 0 && !contains(metaDisks, esp.Disk):
			return NodeDisk{}, nil, &AmbiguousError{Label: "META", What: fmt.Sprintf("the ESP the UKI booted from is on disk %s (%s), but META is on another disk: which disk is the node's?", diskName(esp), esp.Name),
				Candidates: append(guids.candidates(blocks, "META"), Candidate{Block: esp, PartUUID: loader})}
		default:
			return NodeDisk{Known: true, Disk: esp.Disk, Why: fmt.Sprintf("it holds the ESP the UKI booted from (%s, LoaderDevicePartUUID %s)", esp.Name, loader)}, notes, nil
		}
	}
	switch {
	case len(systemDisks) == 0:
		return NodeDisk{}, notes, nil
	case len(metaDisks) == 1:
		return NodeDisk{Known: true, Disk: metaDisks[0], Why: "it holds META"}, notes, nil
	case len(metaDisks) > 1:
		return NodeDisk{}, nil, &AmbiguousError{Label: "META", What: fmt.Sprintf("%d disks hold a partition labelled META: which is the node's?", len(metaDisks)),
			Candidates: guids.candidates(blocks, "META")}
	case len(systemDisks) == 1:
		for d := range systemDisks {
			return NodeDisk{Known: true, Disk: d, Why: "no META; it is the only disk with STATE or EPHEMERAL"}, notes, nil
		}
	}
	var c []Candidate
	for _, b := range blocks {
		if IsSystemLabel(b.Label) {
			c = append(c, guids.candidate(b))
		}
	}
	return NodeDisk{}, nil, &AmbiguousError{What: fmt.Sprintf("no META, and %d disks carry STATE or EPHEMERAL labels: which is the node's?", len(systemDisks)), Candidates: c}
}

// labelled lists the labelled partitions of a scan; a Found made by hand
// (tests) without All lists its ByLabel.
func (fd *Found) labelled() []Block {
	var out []Block
	if fd == nil {
		return nil
	}
	all := fd.All
	if len(all) == 0 {
		for _, b := range fd.ByLabel {
			all = append(all, b)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	}
	for _, b := range all {
		if b.Label != "" {
			out = append(out, b)
		}
	}
	return out
}

// Apply makes sel's choice the one fd gives: every volume label maps to
// the selected partition or to nothing; other labels (ROOT, an ESP) stay.
// Dups then lists only labels outside the rule.
func (fd *Found) Apply(sel *Selection) {
	for l := range fd.ByLabel {
		if IsVolumeLabel(l) {
			delete(fd.ByLabel, l)
		}
	}
	for l, b := range sel.ByLabel {
		fd.ByLabel[l] = b
	}
	var dups []string
	for _, d := range fd.Dups {
		if !IsVolumeLabel(d) {
			dups = append(dups, d)
		}
	}
	fd.Dups = dups
}

func diskName(b Block) string {
	if b.Disk == "" {
		return "?"
	}
	return b.Disk
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// guidCache reads the partition GUIDs of a scan's disks once, when asked.
type guidCache struct {
	blocks []Block
	byName map[string]string // partition name -> GUID
	notes  []string          // disks whose GPT could not be read
}

func (g *guidCache) load() {
	if g.byName != nil {
		return
	}
	g.byName = map[string]string{}
	ids, notes := partUUIDs(g.blocks)
	g.notes = notes
	for _, id := range ids {
		g.byName[id.block.Name] = id.id
	}
}

// block finds the partition with GUID guid.
func (g *guidCache) block(guid string) (Block, bool) {
	g.load()
	for _, b := range g.blocks {
		if b.DevType == "partition" && g.byName[b.Name] == guid {
			return b, true
		}
	}
	return Block{}, false
}

func (g *guidCache) candidate(b Block) Candidate {
	g.load()
	return Candidate{Block: b, PartUUID: g.byName[b.Name]}
}

func (g *guidCache) candidates(blocks []Block, label string) []Candidate {
	var out []Candidate
	for _, b := range blocks {
		if b.Label == label {
			out = append(out, g.candidate(b))
		}
	}
	return out
}

// EnsureNode creates the /dev node of b when fd came from a Finder (Wait
// makes those of the partitions in ByLabel only).
func (fd *Found) EnsureNode(b Block) error {
	if fd == nil || fd.finder == nil {
		return nil
	}
	return fd.finder.EnsureNode(b)
}

// ConfigSourceByLabel picks the partition labelled label for a machine
// config source (cryptinit.config=PARTLABEL=...): the one on the node's
// disk, or the ESP the UKI booted from (loader, its GUID) itself. A
// partition so labelled on another disk is not used (a USB stick can carry
// any label): name it by PARTUUID= or UUID= to read a config from it.
// With no disk known as the node's, the label must be on one partition only.
func ConfigSourceByLabel(fd *Found, label, loader string) (Block, error) {
	spec := "PARTLABEL=" + label
	sel, err := SelectNode(fd, loader, nil)
	if err != nil {
		return Block{}, fmt.Errorf("%s: %w", spec, err)
	}
	guids := &guidCache{blocks: fd.All}
	loader = normID(loader)
	var use, elsewhere []Block
	for _, b := range fd.labelled() {
		switch {
		case b.Label != label:
		case !sel.Node.Known, b.Disk == sel.Node.Disk, loader != "" && guids.candidate(b).PartUUID == loader:
			use = append(use, b)
		default:
			elsewhere = append(elsewhere, b)
		}
	}
	switch {
	case len(use) == 1:
		return use[0], nil
	case len(use) > 1:
		return Block{}, fmt.Errorf("%s: %w", spec, &AmbiguousError{Label: label,
			What: fmt.Sprintf("%d partitions are labelled %s", len(use), label), Candidates: guids.candidates(use, label)})
	case len(elsewhere) > 0:
		var names []string
		for _, b := range elsewhere {
			names = append(names, fmt.Sprintf("%s on disk %s", b.Name, diskName(b)))
		}
		return Block{}, fmt.Errorf("%s: not used: the only partitions so labelled (%s) are not on the node's disk %s (%s) nor the ESP the UKI booted from; name it by PARTUUID= or UUID= to read a config from another disk",
			spec, strings.Join(names, ", "), diskName(Block{Disk: sel.Node.Disk}), sel.Node.Why)
	}
	return Block{}, fmt.Errorf("%s: no partition with that label", spec)
}
