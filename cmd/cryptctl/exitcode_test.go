package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// TestExitCodes: every group exits 0 when done, 1 on an error, 2 when no
// key opens the volume and 3 when it opened but sync had problems, on
// image files through run, as main calls it.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	img := luks2test.NewImage(t, 20<<20)
	metaImg := filepath.Join(dir, "meta.img")
	if err := os.WriteFile(metaImg, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	good, bad := luks2test.KeyFile(t, []byte("oldkey")), luks2test.KeyFile(t, []byte("nope"))
	writeFile := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kdf := "  kdf: {type: argon2id, memoryKiB: 16384, iterations: 2, parallelism: 1}\n"
	head := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n"
	wrongKey := writeFile("wrong.yaml", head+"    - static: {passphrase: nope}\n      slot: 0\n"+kdf)
	// a TPM slot to add: cryptctl has no TPM, so sync cannot create it
	withTPM := writeFile("tpm.yaml", head+"    - static: {passphrase: oldkey}\n      slot: 0\n    - tpm: {}\n      slot: 1\n"+kdf)
	cfg := "../../configs/static-rotation-1.yaml"

	steps := []struct {
		args []string
		code int
	}{
		{[]string{"volume", "format", img, "--config", cfg, "--volume", "EPHEMERAL"}, 0},
		{[]string{"volume", "open", img, "--config", cfg, "--volume", "EPHEMERAL"}, 0},
		{[]string{"luks", "test-key", img, "--key-file", good}, 0},
		{[]string{"meta", "set", "--init", "--tag", "15", "--value", "x", metaImg}, 0},
		{[]string{"version"}, 0},

		{[]string{"volume", "open", img, "--config", filepath.Join(dir, "missing.yaml"), "--volume", "EPHEMERAL"}, 1},
		{[]string{"volume", "open", img, "--config", cfg, "--volume", "u-nothere"}, 1},
		{[]string{"luks", "format", img, "--type", "luks1", "--key-file", good}, 1},
		{[]string{"luks", "test-key", filepath.Join(dir, "missing.img"), "--key-file", good}, 1},
		{[]string{"meta", "get", "--tag", "16", metaImg}, 1},
		{[]string{"no-such-command"}, 1},
		{[]string{"luks", "test-token", img, "--tpm", "/nonexistent/tpmrm0", "--token-id", "5"}, 1}, // no such token: bad input

		{[]string{"luks", "test-key", img, "--key-file", bad}, 2},
		{[]string{"luks", "add-key", img, "--key-file", bad, "--new-key-file", good, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, 2},
		{[]string{"volume", "open", img, "--config", wrongKey, "--volume", "EPHEMERAL"}, 2},
		{[]string{"volume", "sync", img, "--config", wrongKey, "--volume", "EPHEMERAL"}, 2},
		{[]string{"volume", "unlock", img, "--config", wrongKey, "--volume", "EPHEMERAL"}, 2},
		{[]string{"luks", "test-token", img, "--tpm", "/nonexistent/tpmrm0"}, 2}, // no TPM token

		{[]string{"volume", "sync", img, "--config", withTPM, "--volume", "EPHEMERAL"}, 3},
		{[]string{"volume", "unlock", img, "--config", withTPM, "--volume", "EPHEMERAL"}, 3},
	}
	for _, s := range steps {
		var out, errb bytes.Buffer
		code := run(s.args, bytes.NewReader(nil), &out, &errb)
		if code != s.code {
			t.Errorf("cryptctl %s: exit %d, want %d\n%s%s", strings.Join(s.args, " "), code, s.code, out.String(), errb.String())
		}
	}
}
