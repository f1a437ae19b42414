package config

import (
	"strings"
	"testing"
)

// A KMS endpoint's scheme decides whether the sealed blob crosses the
// network in clear: validation warns about grpc:// (plaintext), and about a
// bare host:port, which cryptinit reads as TLS where Talos reads plaintext.
func TestKMSEndpointWarnings(t *testing.T) {
	tests := []struct {
		endpoint string
		want     []string // in the one warning; nil: no warning
	}{
		{"grpc://10.0.2.2:4050", []string{"keys[0].kms.endpoint", "plaintext", "in clear", "https://10.0.2.2:4050"}},
		{"GRPC://kms:4050", []string{"plaintext"}},
		{"kms.lan:4050", []string{"keys[0].kms.endpoint", "no scheme", "TLS", "Talos", "grpc://kms.lan:4050"}},
		{"https://kms.lan:4050", nil},
		{"tls://kms.lan:4050", nil},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			doc := "kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys: [{slot: 0, kms: {endpoint: \"" + tt.endpoint + "\"}}]\n"
			cfg, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("a warning must not be an error: %v", err)
			}
			if tt.want == nil {
				if len(cfg.Warnings) != 0 {
					t.Fatalf("warnings %v, want none", cfg.Warnings)
				}
				return
			}
			if len(cfg.Warnings) != 1 {
				t.Fatalf("warnings %v, want one", cfg.Warnings)
			}
			w := cfg.Warnings[0].String()
			for _, s := range tt.want {
				if !strings.Contains(w, s) {
					t.Errorf("warning %q does not mention %q", w, s)
				}
			}
		})
	}
}
