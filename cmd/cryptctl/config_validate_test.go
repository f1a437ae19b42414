package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 14 item 2: `config validate` refuses files that configure nothing
// and shows what a good file really does.
func TestConfigValidateFindings(t *testing.T) {
	enc := "encryption:\n  keys: [{slot: 0, nodeID: {}}]\n"
	tests := []struct {
		name, doc string
		code      int      // exit code, 0 for success
		want      []string // in the output or the error
	}{
		{"misspelt kind", "kind: VolumeConfg\nname: STATE\n" + enc, 1,
			[]string{`unknown kind "VolumeConfg"`, "did you mean VolumeConfig?", "no volume config"}},
		{"empty file", "", 1, []string{"no volume config"}},
		{"only a Talos kind", "kind: NetworkDefaultActionConfig\ningress: block\n", 1,
			[]string{"note: ", "NetworkDefaultActionConfig", "no volume config"}},
		{"unknown kind next to a volume", "kind: UserVolumeConfig\nname: data\n" + enc + "---\nkind: Bogus\n", 1,
			[]string{`unknown kind "Bogus"`}},
		{"lower-case ephemeral", "kind: VolumeConfig\nname: ephemeral\n" + enc, 1,
			[]string{"did you mean EPHEMERAL?", "no volume config"}},
		{"tab", "kind: VolumeConfig\nname: STATE\nencryption:\n\tkeys: []\n", 1,
			[]string{"tabs are not allowed in YAML indentation (line 4)"}},
		{"u- prefix and real KDF", "kind: UserVolumeConfig\nname: u-data\n" + enc + "---\nkind: NetworkRuleConfig\nname: r\n", 0,
			[]string{"u-u-data (UserVolumeConfig, document 1)", "the u- is added for you", "kdf argon2id 262144 KiB, 4 passes, 4 threads",
				"note: document 2 (NetworkRuleConfig)", "ok (1 volumes)"}},
		{"weak pbkdf2", "kind: UserVolumeConfig\nname: a\nencryption:\n  kdf: {type: pbkdf2, iterations: 1000}\n  keys: [{slot: 0, nodeID: {}}]\n", 0,
			[]string{"kdf pbkdf2-sha256 1000 iterations", "warning: ", "under 100,000", "cryptsetup's defaults", "ok (1 volumes)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := cryptctl(t, "config", "validate", path)
			code := 0
			if err != nil {
				var ee *exitError
				if !errors.As(err, &ee) {
					t.Fatalf("error without exit code: %v", err)
				}
				code = ee.code
				out += err.Error()
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d\n%s", code, tt.code, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}
