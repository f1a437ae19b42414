package boot

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// recoveryKeyRE matches a systemd recovery key as systemd-cryptenroll
// prints it.
var recoveryKeyRE = regexp.MustCompile(`\b[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}\b`)

// enrollRecoveryKey runs the real systemd-cryptenroll --recovery-key on the
// LUKS2 volume in file img (unlocked with passphrase) and returns the key
// as it printed it. A missing tool fails the test.
func enrollRecoveryKey(t *testing.T, img, passphrase string) string {
	t.Helper()
	bin, err := exec.LookPath("systemd-cryptenroll")
	if err != nil {
		t.Fatalf("systemd-cryptenroll not installed (apt-get install systemd): %v", err)
	}
	cmd := exec.Command(bin, "--recovery-key", img)
	cmd.Env = append(os.Environ(), "PASSWORD="+passphrase)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("systemd-cryptenroll --recovery-key: %v\n%s", err, stderr.String())
	}
	key := recoveryKeyRE.FindString(stdout.String())
	if key == "" {
		t.Fatalf("no recovery key in systemd-cryptenroll's output %q", stdout.String())
	}
	return key
}

// TestSystemdRecoveryKeyAtPrompt: a recovery key that the real
// systemd-cryptenroll --recovery-key added to u-data opens it at the console
// prompt as printed, and as people type it (spaces for dashes, no dashes,
// capitals, stray blanks); a key off by one character does not.
func TestSystemdRecoveryKeyAtPrompt(t *testing.T) {
	wrong := strings.Replace(basicConfig, "data-pass", "not-the-pass", 1)
	flip := func(key string) string {
		b := []byte(key)
		if b[0] == 'c' {
			b[0] = 'b'
		} else {
			b[0] = 'c'
		}
		return string(b)
	}
	for _, tc := range []struct {
		name  string
		typed func(key string) string
		opens bool
	}{
		{"as printed", func(k string) string { return k }, true},
		{"spaces for dashes", func(k string) string { return strings.ReplaceAll(k, "-", " ") }, true},
		{"no dashes, capitals", func(k string) string { return strings.ToUpper(strings.ReplaceAll(k, "-", "")) }, true},
		{"stray blanks", func(k string) string { return "  " + strings.Replace(k, "-", " - ", 2) + "\t" }, true},
		{"one character off", flip, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// a node of its own: after a typed key opens u-data, sync
			// re-enrolls the configured slot 0 with the (wrong) config
			n := newNode(t, standardParts())
			root := t.TempDir()
			if _, err := n.boot(root, basicConfig, "").Run(context.Background()); err != nil {
				t.Fatalf("first boot: %v\n%s", err, n.con.String())
			}
			key := enrollRecoveryKey(t, n.parts["u-data"], "data-pass")
			typed := tc.typed(key)
			b := n.boot(root, wrong, "")
			b.Prompt = &fakePrompt{answers: []string{typed}}
			_, err := b.Run(context.Background())
			if tc.opens != (err == nil) {
				t.Fatalf("typed %q: %v (want it to open: %v)\n%s", typed, err, tc.opens, n.con.String())
			}
			if tc.opens && !strings.Contains(n.con.String(), "u-data: opened with slot 1 (console passphrase)") {
				t.Fatalf("log:\n%s", n.con.String())
			}
		})
	}
}
