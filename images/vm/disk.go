package vm

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// MiB is a mebibyte, the unit of partition sizes.
const MiB = 1 << 20

// Partition describes one GPT partition of a test disk.
type Partition struct {
	Label string // GPT partition name: META, STATE, EPHEMERAL, u-<name>, ROOT
	Size  int64  // bytes, a multiple of 1 MiB
	// Fill, when set, writes the initial contents of the partition (given as a
	// file opened at the partition's first byte, limited to Size).
	Fill func(w io.WriterAt, size int64) error
}

// TalosLayout is the partition set of a node disk: META (1 MiB, as Talos),
// STATE (100 MiB, Talos's size) and EPHEMERAL.
func TalosLayout() []Partition {
	return []Partition{
		{Label: "META", Size: 1 * MiB},
		{Label: "STATE", Size: 100 * MiB},
		{Label: "EPHEMERAL", Size: 320 * MiB},
	}
}

// Disk is a raw GPT disk image file.
type Disk struct {
	Path       string
	Partitions []Partition
	offsets    map[string]int64
}

const firstLBA = 2048 // partitions start at 1 MiB, like every partitioning tool

// CreateDisk writes a sparse GPT disk image at path holding parts in order.
// No loop devices: the table is written by go-diskfs, contents by plain writes.
func CreateDisk(path string, parts []Partition) (*Disk, error) {
	total := int64(firstLBA * 512)
	for _, p := range parts {
		if p.Size%MiB != 0 || p.Size <= 0 {
			return nil, fmt.Errorf("vm: partition %s: size %d is not a positive multiple of 1 MiB", p.Label, p.Size)
		}
		total += p.Size
	}
	total += 1 * MiB // room for the backup GPT
	os.Remove(path)
	d, err := diskfs.Create(path, total, diskfs.SectorSizeDefault)
	if err != nil {
		return nil, fmt.Errorf("vm: create disk %s: %w", path, err)
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true}
	disk := &Disk{Path: path, Partitions: parts, offsets: map[string]int64{}}
	start := uint64(firstLBA)
	for i, p := range parts {
		sectors := uint64(p.Size / 512)
		typ := gpt.LinuxFilesystem
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: i + 1, Start: start, End: start + sectors - 1, Size: uint64(p.Size),
			Type: typ, Name: p.Label,
		})
		disk.offsets[p.Label] = int64(start) * 512
		start += sectors
	}
	if err := d.Partition(table); err != nil {
		return nil, fmt.Errorf("vm: partition %s: %w", path, err)
	}
	for _, p := range parts {
		if p.Fill == nil {
			continue
		}
		if err := disk.fill(p); err != nil {
			return nil, err
		}
	}
	return disk, nil
}

func (d *Disk) fill(p Partition) error {
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &sectionWriter{f: f, off: d.offsets[p.Label], size: p.Size}
	if err := p.Fill(w, p.Size); err != nil {
		return fmt.Errorf("vm: fill partition %s of %s: %w", p.Label, d.Path, err)
	}
	return nil
}

// Offset is the byte offset of the partition labelled label.
func (d *Disk) Offset(label string) (int64, bool) {
	off, ok := d.offsets[label]
	return off, ok
}

// ReadAt reads from the partition labelled label, at off bytes into it.
func (d *Disk) ReadAt(label string, b []byte, off int64) error {
	base, ok := d.offsets[label]
	if !ok {
		return fmt.Errorf("vm: disk %s has no partition %s", d.Path, label)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(b, base+off)
	return err
}

// Wipe zeroes the first n bytes of the partition labelled label, as
// `talosctl reset --system-labels-to-wipe` does to its signatures.
func (d *Disk) Wipe(label string, n int64) error {
	for _, p := range d.Partitions {
		if p.Label == label {
			return d.fill(Partition{Label: label, Size: p.Size, Fill: func(w io.WriterAt, size int64) error {
				_, err := w.WriteAt(make([]byte, min(n, size)), 0)
				return err
			}})
		}
	}
	return fmt.Errorf("vm: disk %s has no partition %s", d.Path, label)
}

// WipeAll zeroes the whole partition labelled label, as a full
// `talosctl reset --system-labels-to-wipe` does.
func (d *Disk) WipeAll(label string) error {
	for _, p := range d.Partitions {
		if p.Label == label {
			return d.Wipe(label, p.Size)
		}
	}
	return fmt.Errorf("vm: disk %s has no partition %s", d.Path, label)
}

// EditPartition copies the partition labelled label to a scratch file, runs
// edit on that file (e.g. `cryptctl meta set ... FILE`), and writes it back.
func (d *Disk) EditPartition(label string, edit func(file string) error) error {
	var size int64
	for _, p := range d.Partitions {
		if p.Label == label {
			size = p.Size
		}
	}
	if size == 0 {
		return fmt.Errorf("vm: disk %s has no partition %s", d.Path, label)
	}
	buf := make([]byte, size)
	if err := d.ReadAt(label, buf, 0); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cryptinit-part-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, label+".img")
	if err := os.WriteFile(file, buf, 0o600); err != nil {
		return err
	}
	if err := edit(file); err != nil {
		return fmt.Errorf("vm: edit %s of %s: %w", label, d.Path, err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("vm: edit %s changed its size from %d to %d", label, size, len(b))
	}
	return d.fill(Partition{Label: label, Size: size, Fill: func(w io.WriterAt, _ int64) error {
		_, err := w.WriteAt(b, 0)
		return err
	}})
}

// sectionWriter confines writes to one partition.
type sectionWriter struct {
	f    *os.File
	off  int64
	size int64
}

func (s *sectionWriter) WriteAt(b []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(b)) > s.size {
		return 0, fmt.Errorf("write of %d bytes at %d beyond the partition (%d bytes)", len(b), off, s.size)
	}
	return s.f.WriteAt(b, s.off+off)
}

// FillFrom copies an image file into the partition.
func FillFrom(image string) func(io.WriterAt, int64) error {
	return func(w io.WriterAt, size int64) error {
		b, err := os.ReadFile(image)
		if err != nil {
			return err
		}
		_, err = w.WriteAt(b, 0)
		return err
	}
}

// FillMkfs formats the partition with mkfs (e.g. "ext4", "xfs") on the host,
// through a scratch file, as an unencrypted filesystem already in place.
func FillMkfs(fstype string, args ...string) func(io.WriterAt, int64) error {
	return func(w io.WriterAt, size int64) error {
		dir, err := os.MkdirTemp("", "cryptinit-mkfs-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		img := filepath.Join(dir, "fs.img")
		if err := os.Truncate(img, 0); err != nil && !os.IsNotExist(err) {
			return err
		}
		f, err := os.Create(img)
		if err != nil {
			return err
		}
		f.Truncate(size)
		f.Close()
		cmd := exec.Command("mkfs."+fstype, append(args, img)...)
		cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("mkfs.%s: %w: %s", fstype, err, out)
		}
		return copySparse(w, img)
	}
}

// copySparse copies file into w, skipping all-zero blocks so images stay sparse.
func copySparse(w io.WriterAt, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		if n > 0 && string(buf[:n]) != string(zero[:n]) {
			if _, werr := w.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
