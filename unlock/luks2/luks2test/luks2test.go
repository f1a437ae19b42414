// Package luks2test holds helpers for tests that work on LUKS image files
// and cross-check them against the real cryptsetup, so the tests of luks2,
// probe and cryptctl share one copy instead of keeping their own.
//
// It is for tests only, like net/http/httptest, and imports nothing from the
// project but internal/testenv, so luks2's in-package tests can use it
// without an import cycle.
package luks2test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// HaveCryptsetup reports whether the cross-checks against cryptsetup can run.
func HaveCryptsetup() bool {
	_, err := exec.LookPath("cryptsetup")
	return err == nil
}

// WantCryptsetup reports whether the cross-checks against cryptsetup can
// run, for a test that runs without them; under CRYPTINIT_STRICT=1 or
// CRYPTINIT_VM=1 their absence fails the test (see internal/testenv.Have).
func WantCryptsetup(tb testing.TB) bool {
	tb.Helper()
	return testenv.Have(tb, "cryptsetup")
}

// NeedCryptsetup skips the test when cryptsetup is not installed, and fails
// it under CRYPTINIT_STRICT=1 or CRYPTINIT_VM=1 (see internal/testenv).
func NeedCryptsetup(t testing.TB) {
	t.Helper()
	if !HaveCryptsetup() {
		testenv.Missing(t, "cryptsetup not installed (images/setup.sh installs cryptsetup-bin); skipping the cross-check against it")
	}
}

// Cryptsetup runs the real tool with stdin (none when nil) and returns its
// stdout; the error names the command line and carries its stderr.
func Cryptsetup(t testing.TB, stdin []byte, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("cryptsetup", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("cryptsetup %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// MustCryptsetup is Cryptsetup that fails the test on an error.
func MustCryptsetup(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	out, err := Cryptsetup(t, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// NewImage makes a zeroed sparse image file of size bytes in a temporary
// directory removed after the test, and returns its path.
func NewImage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// KeyFile writes key to a new temporary file and returns its path.
func KeyFile(t testing.TB, key []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(key); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// CheckKey reports whether cryptsetup opens path with pass at slot, or at
// any slot when slot < 0 (nil when it does).
func CheckKey(t testing.TB, path string, pass []byte, slot int) error {
	t.Helper()
	args := []string{"open", "--test-passphrase", "--key-file", KeyFile(t, pass)}
	if slot >= 0 {
		args = append(args, "--key-slot", strconv.Itoa(slot))
	}
	_, err := Cryptsetup(t, nil, append(args, path)...)
	return err
}

// VolumeKey returns the volume key cryptsetup derives from pass, read from
// its --dump-volume-key output.
func VolumeKey(t testing.TB, path string, pass []byte) []byte {
	t.Helper()
	out := MustCryptsetup(t, nil, "luksDump", "-q", "--dump-volume-key", "--key-file", KeyFile(t, pass), path)
	_, dump, ok := strings.Cut(out, "MK dump:")
	if !ok {
		t.Fatalf("no MK dump in cryptsetup output")
	}
	var hexs strings.Builder
	for _, f := range strings.Fields(dump) {
		if len(f) != 2 {
			break
		}
		hexs.WriteString(f)
	}
	k, err := hex.DecodeString(hexs.String())
	if err != nil {
		t.Fatal(err)
	}
	return k
}
