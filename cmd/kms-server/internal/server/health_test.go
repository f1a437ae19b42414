package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/cmd/kms-server/internal/keyring"
)

// /healthz says ok only while the server could reload its keyring: a
// keyring file the next reload cannot read, one that lost the server's keys,
// or a failed reload is reported as 503 with the reason (issue 10 defect 7:
// a root-run rotate left a file the server could not read and /healthz
// still said ok).
func TestHealthzChecksKeyring(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	r1, _, err := keyring.LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{KeyringPath: path})
	if err != nil {
		t.Fatal(err)
	}
	h := s.HTTPHandler()
	check := func(step string, wantOK bool, wantIn string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		ok := rec.Code == http.StatusOK && strings.HasPrefix(string(body), "ok")
		if ok != wantOK || !strings.Contains(string(body), wantIn) {
			t.Fatalf("%s: /healthz = %d %q; want ok=%v and %q", step, rec.Code, body, wantOK, wantIn)
		}
		if !ok && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s: /healthz = %d, want 503", step, rec.Code)
		}
	}
	check("start", true, "keys=1")

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	check("keyring readable by others", false, "chmod 600")
	os.Chmod(path, 0o600)
	check("mode restored", true, "ok")

	saved, _ := os.ReadFile(path)
	os.Remove(path)
	check("keyring gone", false, path)

	other, _ := keyring.Generate() // key 1 again, another secret
	if err := other.Save(path); err != nil {
		t.Fatal(err)
	}
	check("keyring replaced", false, "master key 1 is a different key")

	// A failed reload is reported until a reload succeeds.
	os.WriteFile(path, []byte("{not json"), 0o600)
	if err := s.Reload(); err == nil {
		t.Fatal("Reload of a corrupt keyring succeeded")
	}
	os.WriteFile(path, saved, 0o600)
	check("after a failed reload", false, "last reload failed")

	// rotate adds a key: still healthy before the reload, and after it.
	r2, _ := r1.Rotate()
	if err := r2.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	check("after rotate and reload", true, "keys=2 newest=2")
}
