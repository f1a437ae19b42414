package keyring

import (
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// recordFS performs Save's ordered calls for real and records them.
type recordFS struct {
	calls []string
	path  string
}

func (r *recordFS) syncFile(f *os.File) error {
	r.calls = append(r.calls, "fsync file")
	return f.Sync()
}

func (r *recordFS) rename(oldpath, newpath string) error {
	r.calls = append(r.calls, "rename")
	return os.Rename(oldpath, newpath)
}

func (r *recordFS) syncDir(dir string) error {
	if dir != filepath.Dir(r.path) {
		r.calls = append(r.calls, "fsync other dir "+dir)
	} else {
		r.calls = append(r.calls, "fsync dir")
	}
	return osFS{}.syncDir(dir)
}

// A crash after Save returns must find the new keyring: the file is fsynced
// before the rename, and the directory after it (defect 8 of issue 10).
func TestSaveSyncsFileThenDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	r, _ := Generate()
	for _, existing := range []bool{false, true} {
		rec := &recordFS{path: path}
		if err := r.save(path, rec); err != nil {
			t.Fatal(err)
		}
		if want := []string{"fsync file", "rename", "fsync dir"}; !reflect.DeepEqual(rec.calls, want) {
			t.Errorf("existing=%v: calls %q, want %q", existing, rec.calls, want)
		}
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
}

// Replacing a keyring keeps its mode and owner: a root-run rotate must not
// leave a root-owned file that the server, running as another user, cannot
// read at its next reload.
func TestSaveKeepsModeAndOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	r, _ := Generate()
	if err := r.Save(path); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = 4242, 4343 // as the kms-server user would own it
		if err := os.Chown(path, uid, gid); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: checking the mode and that the owner stays ours")
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	next, _ := r.Rotate()
	if err := next.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o400 || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Fatalf("after Save: mode %v owner %d:%d, want 0400 %d:%d", fi.Mode().Perm(), st.Uid, st.Gid, uid, gid)
	}
	if got, err := Load(path); err != nil || got.Len() != 2 {
		t.Fatalf("reload: %v", err)
	}
}
