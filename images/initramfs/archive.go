package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"path"
	"sort"
	"strings"
)

// Entry is one file of the archive. Directories are made for every parent
// path; Data is the content of a regular file, Link the target of a symlink.
type Entry struct {
	Path string // relative, slash-separated: "lib/modules/6.1.0/modules.dep"
	Mode uint32 // permission bits only
	Data []byte // regular file
	Link string // symlink target (Data must be empty)
	dir  bool   // a directory
}

// Archive is a set of entries by path. Each path comes from one source:
// adding a path twice is an error (but for the same directory twice), so a
// module or library can never silently replace /init or another file.
type Archive map[string]Entry

// File adds a regular file.
func (a Archive) File(p string, mode uint32, data []byte) error {
	if err := checkSize(clean(p), int64(len(data))); err != nil {
		return err
	}
	return a.add(Entry{Path: clean(p), Mode: mode, Data: data})
}

// Symlink adds a symbolic link.
func (a Archive) Symlink(p, target string) error {
	return a.add(Entry{Path: clean(p), Mode: 0o777, Link: target})
}

// Dir adds an (empty) directory with permission bits mode (01777 for a
// sticky, world-writable /tmp).
func (a Archive) Dir(p string, mode uint32) error {
	return a.add(Entry{Path: clean(p), Mode: mode, dir: true})
}

// checkSize refuses a file too large for newc's 32-bit size field.
func checkSize(p string, n int64) error {
	if n > math.MaxUint32 {
		return fmt.Errorf("archive: %s is %d bytes; a newc cpio holds files below 4 GiB", p, n)
	}
	return nil
}

// add refuses a second entry at a path, unless both are the same directory.
func (a Archive) add(e Entry) error {
	if old, ok := a[e.Path]; ok && !(old.dir && e.dir && old.Mode == e.Mode) {
		return fmt.Errorf("archive: %s added twice (two sources for one path)", e.Path)
	}
	a[e.Path] = e
	return nil
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// Size is the sum of the regular files' sizes.
func (a Archive) Size() int64 {
	var n int64
	for _, e := range a {
		n += int64(len(e.Data))
	}
	return n
}

// WriteTo writes a as a newc cpio archive that depends on nothing but its
// entries: paths sorted, parents before children, owner 0:0, mtime 0,
// inode numbers in path order. The same entries give the same bytes. A
// path that is a file or a symlink and also the parent of another entry is
// an error: an unpacker would follow the link or fail.
func (a Archive) WriteTo(w io.Writer) (int64, error) {
	all := map[string]Entry{}
	for p, e := range a {
		all[p] = e
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if parent, ok := a[d]; ok && !parent.dir {
				return 0, fmt.Errorf("archive: %s is a file and the directory of %s", d, p)
			}
			if _, ok := all[d]; !ok {
				if _, ok := a[d]; !ok {
					all[d] = Entry{Path: d, Mode: 0o755, dir: true}
				}
			}
		}
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	cw := &countWriter{w: bufio.NewWriter(w)}
	for i, p := range paths {
		e := all[p]
		mode, data := uint32(0o100000)|e.Mode, e.Data
		switch {
		case e.dir:
			mode = 0o040000 | e.Mode
		case e.Link != "":
			mode, data = 0o120000|0o777, []byte(e.Link)
		}
		writeHeader(cw, uint32(i+1), mode, uint32(len(data)), p)
		cw.Write(data)
		pad(cw)
	}
	writeHeader(cw, 0, 0, 0, "TRAILER!!!")
	if cw.err == nil {
		cw.err = cw.w.(*bufio.Writer).Flush()
	}
	return cw.n, cw.err
}

func writeHeader(w *countWriter, ino, mode, size uint32, name string) {
	fmt.Fprintf(w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	io.WriteString(w, name+"\x00")
	pad(w)
}

func pad(w *countWriter) {
	if r := w.n % 4; r != 0 {
		w.Write(make([]byte, 4-r))
	}
}

// countWriter counts bytes (for newc's 4-byte alignment) and keeps the
// first error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
	return n, err
}
