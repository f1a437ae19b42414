package server

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"
)

// denyList is a set of revoked node UUIDs, read from a file with one UUID a
// line ('#' starts a comment). It is immutable; reloading builds a new one.
type denyList struct {
	nodes   map[string]bool
	modTime time.Time
	size    int64
}

func (d *denyList) denied(nodeUUID string) bool {
	return d != nil && d.nodes[strings.ToLower(nodeUUID)]
}

func (d *denyList) len() int {
	if d == nil {
		return 0
	}
	return len(d.nodes)
}

// loadDenyList reads path. A missing file is an error: a deny list that
// silently vanished would re-admit revoked nodes.
func loadDenyList(path string) (*denyList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	d := &denyList{nodes: make(map[string]bool), modTime: fi.ModTime(), size: fi.Size()}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := checkNodeUUID(line); err != nil {
			return nil, fmt.Errorf("deny list %s line %d: %w", path, n, err)
		}
		d.nodes[strings.ToLower(line)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("deny list %s: %w", path, err)
	}
	return d, nil
}

// changed reports whether the file at path differs from what d was read from.
func (d *denyList) changed(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return true
	}
	return d == nil || !fi.ModTime().Equal(d.modTime) || fi.Size() != d.size
}

// maxNodeUUID bounds a node UUID; a UUID is 36 characters, a META override
// may be longer but not much.
const maxNodeUUID = 128

// checkNodeUUID accepts printable ASCII without spaces.
func checkNodeUUID(s string) error {
	if s == "" {
		return fmt.Errorf("node UUID is empty")
	}
	if len(s) > maxNodeUUID {
		return fmt.Errorf("node UUID is %d bytes, at most %d allowed", len(s), maxNodeUUID)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("node UUID has byte 0x%02x at %d; want printable ASCII", c, i)
		}
	}
	return nil
}

// fileStamp identifies a version of a file well enough to see it change.
type fileStamp struct {
	modTime int64 // Unix nanoseconds
	size    int64
	ok      bool
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{modTime: fi.ModTime().UnixNano(), size: fi.Size(), ok: true}
}
