package vm

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// Overlay is a set of files laid over the initramfs: the kernel unpacks
// concatenated archives in order and later entries replace earlier ones, so a
// test adds a machine config (or replaces /init) without rebuilding the image.
type Overlay map[string]OverlayFile

// OverlayFile is one regular file of an Overlay.
type OverlayFile struct {
	Data []byte
	Mode os.FileMode // permission bits; 0644 when zero
}

// WriteNewc writes o as an uncompressed cpio "newc" archive, creating parent
// directories, in a stable order.
func (o Overlay) WriteNewc(w io.Writer) error {
	dirs := map[string]bool{}
	var names []string
	for name := range o {
		name = strings.TrimPrefix(path.Clean("/"+name), "/")
		names = append(names, name)
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList) // parents sort before children
	sort.Strings(names)
	ino := uint32(1)
	for _, d := range dirList {
		if err := writeNewcEntry(w, ino, d, 0o040755, nil); err != nil {
			return err
		}
		ino++
	}
	for _, n := range names {
		f := o["/"+n]
		if f.Data == nil {
			f = o[n]
		}
		mode := uint32(f.Mode.Perm())
		if mode == 0 {
			mode = 0o644
		}
		if err := writeNewcEntry(w, ino, n, 0o100000|mode, f.Data); err != nil {
			return err
		}
		ino++
	}
	return writeNewcEntry(w, 0, "TRAILER!!!", 0, nil)
}

func writeNewcEntry(w io.Writer, ino uint32, name string, mode uint32, data []byte) error {
	var b bytes.Buffer
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(&b)
	b.Write(data)
	pad4(&b)
	_, err := w.Write(b.Bytes())
	return err
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// concatFiles writes the files in order into out (the initramfs and overlays).
func concatFiles(out string, parts ...string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	for _, p := range parts {
		in, err := os.Open(p)
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(f, in)
		in.Close()
		if err != nil {
			f.Close()
			return err
		}
		// Archives start on a 4-byte boundary.
		if st, err := f.Stat(); err == nil && st.Size()%4 != 0 {
			f.Write(make([]byte, 4-st.Size()%4))
		}
	}
	return f.Close()
}
