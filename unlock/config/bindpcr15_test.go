package config

import (
	"strings"
	"testing"
)

// bindPCR15 defaults to true; false is accepted on tpm keys with a warning
// that names what the latch no longer protects.
func TestBindPCR15(t *testing.T) {
	head := "kind: VolumeConfig\nname: STATE\nencryption:\n  keys:\n"
	for _, c := range []struct {
		name, key string
		bound     bool
		warn      bool
	}{
		{"default", "{slot: 0, tpm: {}}", true, false},
		{"true", "{slot: 0, tpm: {bindPCR15: true}}", true, false},
		{"false, as Talos enrolls", "{slot: 0, tpm: {bindPCR15: false}}", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte(head + "    - " + c.key + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			k := cfg.Volume("STATE").Encryption.Keys[0]
			if got := k.TPM.LatchBound(); got != c.bound {
				t.Errorf("LatchBound %v, want %v", got, c.bound)
			}
			warned := false
			for _, w := range cfg.Warnings {
				warned = warned || strings.Contains(w.Msg, "bindPCR15: false")
			}
			if warned != c.warn {
				t.Errorf("warning %v, want %v: %v", warned, c.warn, cfg.Warnings)
			}
		})
	}
}
