package luks2

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The `cryptctl luks` commands (cmd/cryptctl/luks.go) end to end, on image
// files, checked against cryptsetup. They live here because this package's
// owner owns that file; the binary is built once per test run.

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

func cryptctl(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cryptctl-luks-test")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "cryptctl")
		out, err := exec.Command("go", "build", "-o", cliPath, "github.com/cryptinit/cryptinit/cmd/cryptctl").CombinedOutput()
		if err != nil {
			cliErr = errors.New(string(out))
		}
	})
	if cliErr != nil {
		t.Skipf("cmd/cryptctl does not build here (go toolchain missing or another package mid-change): %v", cliErr)
	}
	return cliPath
}

// run runs cryptctl luks ARGS with stdin and returns stdout, stderr, exit code.
func run(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(cryptctl(t), append([]string{"luks"}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("cryptctl luks %v: exit %d: %s", args, code, errs)
	}
	return out
}

func TestCLI(t *testing.T) {
	needCryptsetup(t)
	img := newImage(t, imageSize)
	k0, k1, k2 := keyFile(t, []byte("zero\n")), keyFile(t, []byte("one")), keyFile(t, []byte("two"))
	cheap := []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}

	// Bad input writes nothing.
	for _, args := range [][]string{
		{"format", img}, // no key file
		{"format", img, "--key-file", k0, "--pbkdf", "pbkdf2"}, // no explicit iterations
		{"format", img, "--key-file", k0, "--pbkdf", "scrypt"},
		{"format", img, "--key-file", k0, "--key-size", "384", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
		{"format", img, "--key-file", k0, "--key-slot", "32", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
	} {
		if _, errs, code := run(t, nil, args...); code == 0 || errs == "" {
			t.Errorf("%v: exit %d, stderr %q; want a clear error", args, code, errs)
		}
	}
	if _, err := cryptsetup(t, nil, "isLuks", img); err == nil {
		t.Fatal("a refused format wrote a header")
	}

	mustRun(t, nil, append([]string{"format", img, "--key-file", k0, "--key-size", "256", "--sector-size", "512", "--label", "STATE", "--key-slot", "2"}, cheap...)...)
	if ours, theirs := mustRun(t, nil, "dump", img), mustCryptsetup(t, nil, "luksDump", img); ours != theirs {
		t.Errorf("dump differs from cryptsetup luksDump:\n%s\n----\n%s", ours, theirs)
	}
	if ours, theirs := mustRun(t, nil, "dump", "--json", img), mustCryptsetup(t, nil, "luksDump", "--dump-json-metadata", img); !jsonEq(ours, theirs) {
		t.Errorf("dump --json differs from cryptsetup's JSON:\n%s\n%s", ours, theirs)
	}
	if err := csTestKey(t, img, []byte("zero\n"), 2); err != nil {
		t.Fatalf("key file bytes not used as they are: %v", err)
	}

	// test-key: 0 when a key opens, 2 when none does.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"test-key", img, "--key-file", k0}, 0},
		{[]string{"test-key", img, "--key-file", k0, "--slot", "2"}, 0},
		{[]string{"test-key", img, "--key-file", k1}, 2},
		{[]string{"test-key", img, "--key-file", k0, "--slot", "0"}, 1},
	} {
		if _, errs, code := run(t, nil, c.args...); code != c.code {
			t.Errorf("%v: exit %d (%s), want %d", c.args, code, errs, c.code)
		}
	}
	// Key from stdin.
	if _, _, code := run(t, []byte("zero\n"), "test-key", img, "--key-file", "-"); code != 0 {
		t.Errorf("test-key from stdin: exit %d", code)
	}

	// add-key by passphrase and by volume key.
	mustRun(t, nil, append([]string{"add-key", img, "--key-file", k0, "--new-key-file", k1}, cheap...)...)
	vk := keyFile(t, csVolumeKey(t, img, []byte("zero\n")))
	mustRun(t, nil, append([]string{"add-key", img, "--volume-key-file", vk, "--new-key-file", k2, "--key-slot", "9"}, cheap...)...)
	if _, errs, code := run(t, nil, append([]string{"add-key", img, "--key-file", k2, "--new-key-file", k1, "--key-slot", "9"}, cheap...)...); code == 0 || !strings.Contains(errs, "in use") {
		t.Errorf("add-key into a used slot: exit %d %s", code, errs)
	}
	for pass, slot := range map[string]int{"one": 0, "two": 9} {
		if err := csTestKey(t, img, []byte(pass), slot); err != nil {
			t.Errorf("cryptsetup after add-key, slot %d: %v", slot, err)
		}
	}

	// change-key re-keys slot 2 in place.
	k3 := keyFile(t, []byte("three"))
	mustRun(t, nil, append([]string{"change-key", img, "--key-file", k0, "--new-key-file", k3}, cheap...)...)
	if err := csTestKey(t, img, []byte("three"), 2); err != nil {
		t.Errorf("cryptsetup after change-key: %v", err)
	}
	if _, _, code := run(t, nil, "test-key", img, "--key-file", k0); code != 2 {
		t.Errorf("old passphrase still opens after change-key (exit %d)", code)
	}
	k0 = k3

	// tokens
	tok := `{"type":"talos-tpm2","keyslots":["9"],"UserData":{"pcrs":[7]}}`
	mustRun(t, []byte(tok), "token", "import", img, "--token-id", "9")
	if _, errs, code := run(t, []byte(tok), "token", "import", img, "--token-id", "9"); code == 0 || !strings.Contains(errs, "in use") {
		t.Errorf("import over a token: exit %d %s", code, errs)
	}
	jf := keyFile(t, []byte(`{"type":"sideroKMS","keyslots":[],"UserData":{"sealedData":"AAEC"}}`))
	mustRun(t, nil, "token", "import", img, "--token-id", "9", "--json-file", jf, "--replace")
	if ours, theirs := mustRun(t, nil, "token", "export", img, "--token-id", "9"), mustCryptsetup(t, nil, "token", "export", "--token-id", "9", img); !jsonEq(ours, theirs) || !strings.Contains(ours, "sideroKMS") {
		t.Errorf("token export: ours %s cryptsetup %s", ours, theirs)
	}
	mustRun(t, nil, "token", "remove", img, "--token-id", "9")
	if _, err := cryptsetup(t, nil, "token", "export", "--token-id", "9", img); err == nil {
		t.Error("token still there after remove")
	}

	// remove-key; a --key-file must open another slot; never the last one.
	if _, _, code := run(t, nil, "remove-key", img, "--slot", "0", "--key-file", k1); code != 2 {
		t.Errorf("remove-key with a key that only opens the removed slot: exit %d, want 2", code)
	}
	mustRun(t, nil, "remove-key", img, "--slot", "0", "--key-file", k2)
	mustRun(t, nil, "remove-key", img, "--slot", "9")
	if _, errs, code := run(t, nil, "remove-key", img, "--slot", "2"); code == 0 || !strings.Contains(errs, "last keyslot") {
		t.Errorf("removing the last slot: exit %d %s", code, errs)
	}
	if got := csIDs(csMetadata(t, img)["keyslots"]); len(got) != 1 || got[0] != 2 {
		t.Errorf("cryptsetup lists keyslots %v, want [2]", got)
	}
	mustRun(t, nil, "flags", img, "--set", "allow-discards")
	if dump := mustCryptsetup(t, nil, "luksDump", img); !strings.Contains(dump, "Flags:       \tallow-discards") {
		t.Errorf("flags not visible to cryptsetup")
	}
}

func jsonEq(a, b string) bool {
	same, err := sameJSON([]byte(a), []byte(b))
	return err == nil && same
}
