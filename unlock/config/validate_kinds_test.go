package config

import (
	"strings"
	"testing"
)

// Issue 14 item 2: configs that do nothing, or not what they say, are
// told apart from good ones. Each case names where its finding lands.
func TestParseFindings(t *testing.T) {
	enc := "encryption:\n  keys: [{slot: 0, nodeID: {}}]\n"
	tests := []struct {
		name, doc  string
		where      string // "err", "warning", "unknown" (UnknownKinds), "note"
		want       []string
		wantVolume string // a volume that must still be parsed, "" for none
	}{
		{"misspelt kind", "kind: VolumeConfg\nname: STATE\n" + enc, "unknown",
			[]string{`unknown kind "VolumeConfg"`, "did you mean VolumeConfig?", "line 1"}, ""},
		{"no kind", "name: STATE\n" + enc, "unknown", []string{"no kind"}, ""},
		{"talos kind", "apiVersion: v1alpha1\nkind: NetworkDefaultActionConfig\ningress: block\n", "note",
			[]string{"NetworkDefaultActionConfig", "skipped"}, ""},
		{"v1alpha1 without volumes", "version: v1alpha1\nmachine:\n  type: worker\n", "note", []string{"v1alpha1", "skipped"}, ""},
		{"lower-case ephemeral", "kind: VolumeConfig\nname: ephemeral\n" + enc, "warning", []string{"did you mean EPHEMERAL?"}, ""},
		{"u- prefix", "kind: UserVolumeConfig\nname: u-data\n" + enc, "warning",
			[]string{"u-u-data", "the u- is added for you", "name: data"}, "u-u-data"},
		{"tab", "kind: VolumeConfig\nname: STATE\nencryption:\n\tkeys: []\n", "err",
			[]string{"tabs are not allowed in YAML indentation (line 4)"}, ""},
		{"every unknown field", "kind: UserVolumeConfig\nname: a\nencryption:\n  bogus: 1\n  keys: [{slot: 0, nodeID: {}}]\n---\n" +
			"kind: UserVolumeConfig\nname: b\nencrypton: {}\n", "err",
			[]string{`document 1 (u-a) line 4: unknown field "encryption.bogus"`, `document 2 (u-b) line 9: unknown field "encrypton"`, "2 problems"}, ""},
		{"tab inside a quoted string is no tab error", "kind: VolumeConfig\nname: STATE\nnote: \"a\n\tb\"\nencryption: [\n", "err",
			[]string{"document 1: yaml:"}, ""},
		{"weak argon2", "kind: UserVolumeConfig\nname: a\nencryption:\n  kdf: {memoryKiB: 32768}\n  keys: [{slot: 0, nodeID: {}}]\n", "warning",
			[]string{"32768 KiB is under 64 MiB", "cryptsetup's defaults", "1 GiB"}, "u-a"},
		{"weak pbkdf2", "kind: UserVolumeConfig\nname: a\nencryption:\n  kdf: {type: pbkdf2, iterations: 50000}\n  keys: [{slot: 0, nodeID: {}}]\n", "warning",
			[]string{"50000 iterations (under 100,000)", "cryptsetup's defaults"}, "u-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc))
			var got string
			switch tt.where {
			case "err":
				if err == nil {
					t.Fatal("no error")
				}
				got = err.Error()
			default:
				if err != nil {
					t.Fatalf("error %v (the boot must accept this config)", err)
				}
				var ps []Problem
				switch tt.where {
				case "warning":
					ps = cfg.Warnings
				case "unknown":
					ps = cfg.UnknownKinds
					if len(cfg.Warnings) != len(ps) {
						t.Errorf("unknown kinds %v must also be warnings (logged at boot), warnings %v", ps, cfg.Warnings)
					}
				case "note":
					ps = cfg.Notes
					if len(cfg.Warnings) != 0 || len(cfg.UnknownKinds) != 0 {
						t.Errorf("a Talos kind is no warning: %v %v", cfg.Warnings, cfg.UnknownKinds)
					}
				}
				for _, p := range ps {
					got += p.String() + "\n"
				}
				if tt.wantVolume == "" && len(cfg.Volumes) != 0 {
					t.Errorf("volumes %+v, want none", cfg.Volumes)
				}
				if tt.wantVolume != "" && cfg.Volume(tt.wantVolume) == nil {
					t.Errorf("volume %s missing: %+v", tt.wantVolume, cfg.Volumes)
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%s %q does not contain %q", tt.where, got, w)
				}
			}
		})
	}
}
