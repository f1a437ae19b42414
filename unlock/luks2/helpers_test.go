package luks2

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Small KDF costs keep the suite fast on a shared 2-core machine.
var (
	kdfPBKDF2    = KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}
	kdfPBKDF2512 = KDF{Type: "pbkdf2", Hash: "sha512", Iterations: 1000}
	kdfArgon2id  = KDF{Type: "argon2id", Time: 4, Memory: 32 << 10, Parallel: 2}
	kdfArgon2i   = KDF{Type: "argon2i", Time: 4, Memory: 16 << 10, Parallel: 1}
)

const imageSize = 20 << 20

// haveCryptsetup reports whether the cross-checks against cryptsetup can run.
func haveCryptsetup() bool {
	_, err := exec.LookPath("cryptsetup")
	return err == nil
}

func needCryptsetup(t testing.TB) {
	t.Helper()
	if !haveCryptsetup() {
		t.Skip("cryptsetup not installed (images/setup.sh installs cryptsetup-bin); skipping the cross-check against it")
	}
}

// cryptsetup runs the real tool and returns its stdout.
func cryptsetup(t testing.TB, stdin []byte, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("cryptsetup", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), errors.New("cryptsetup " + strings.Join(args, " ") + ": " + err.Error() + ": " + errb.String())
	}
	return out.String(), nil
}

func mustCryptsetup(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	out, err := cryptsetup(t, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newImage makes a sparse image file.
func newImage(t testing.TB, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func keyFile(t testing.TB, key []byte) string {
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

// readFile returns path's bytes; a refusal test compares them before and
// after, so a read that fails must fail the test, not compare two nils.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// openRO opens path read-only for the rest of the test.
func openRO(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// openRW opens path read-write for the rest of the test.
func openRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readHeaderFile(t testing.TB, path string) *Header {
	t.Helper()
	h, err := ReadHeader(openRO(t, path))
	if err != nil {
		t.Fatalf("ReadHeader(%s): %v", path, err)
	}
	return h
}

// unlockFile opens path with our reader and returns the volume key.
func unlockFile(t testing.TB, path string, pass []byte, slot int) ([]byte, int, error) {
	t.Helper()
	f := openRO(t, path)
	h, err := ReadHeader(f)
	if err != nil {
		return nil, -1, err
	}
	return h.Unlock(f, pass, slot)
}

// csFormat formats path with cryptsetup using a cheap pbkdf2.
func csFormat(t testing.TB, path string, pass []byte, extra ...string) {
	t.Helper()
	args := append([]string{"luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-file", keyFile(t, pass)}, extra...)
	mustCryptsetup(t, nil, append(args, path)...)
}

// csTestKey reports whether cryptsetup opens path with pass (at slot, or any when slot < 0).
func csTestKey(t testing.TB, path string, pass []byte, slot int) error {
	t.Helper()
	args := []string{"open", "--test-passphrase", "--key-file", keyFile(t, pass)}
	if slot >= 0 {
		args = append(args, "--key-slot", itoa(slot))
	}
	_, err := cryptsetup(t, nil, append(args, path)...)
	return err
}

func itoa(i int) string { return strconv.Itoa(i) }

// csVolumeKey returns the volume key cryptsetup derives from pass.
func csVolumeKey(t testing.TB, path string, pass []byte) []byte {
	t.Helper()
	out := mustCryptsetup(t, nil, "luksDump", "-q", "--dump-volume-key", "--key-file", keyFile(t, pass), path)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("no MK dump in cryptsetup output")
	}
	var hexs strings.Builder
	for _, f := range strings.Fields(out[i+len("MK dump:"):]) {
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

// csMetadata is cryptsetup's view of the JSON metadata.
func csMetadata(t testing.TB, path string) map[string]map[string]json.RawMessage {
	t.Helper()
	out := mustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", path)
	var m map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("parse cryptsetup JSON dump: %v", err)
	}
	return m
}

func idsOf[T any](m map[int]T) []int {
	var out []int
	for i := 0; i < 64; i++ {
		if _, ok := m[i]; ok {
			out = append(out, i)
		}
	}
	return out
}

func csIDs(m map[string]json.RawMessage) []int {
	var out []int
	for i := 0; i < 64; i++ {
		if _, ok := m[itoa(i)]; ok {
			out = append(out, i)
		}
	}
	return out
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	writeFile(t, to, readFile(t, from))
}
