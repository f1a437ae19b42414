package luks2

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// Small KDF costs keep the suite fast on a shared 2-core machine.
var (
	kdfPBKDF2    = KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}
	kdfPBKDF2512 = KDF{Type: "pbkdf2", Hash: "sha512", Iterations: 1000}
	kdfArgon2id  = KDF{Type: "argon2id", Time: 4, Memory: 32 << 10, Parallel: 2}
	kdfArgon2i   = KDF{Type: "argon2i", Time: 4, Memory: 16 << 10, Parallel: 1}
)

const imageSize = 20 << 20

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
		"--key-file", luks2test.KeyFile(t, pass)}, extra...)
	luks2test.MustCryptsetup(t, nil, append(args, path)...)
}

func itoa(i int) string { return strconv.Itoa(i) }

// csMetadata is cryptsetup's view of the JSON metadata.
func csMetadata(t testing.TB, path string) map[string]map[string]json.RawMessage {
	t.Helper()
	out := luks2test.MustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", path)
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
