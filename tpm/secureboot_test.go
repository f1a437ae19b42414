package tpm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func writeEFIVar(t *testing.T, dir, name string, value ...byte) {
	t.Helper()
	data := append([]byte{0x06, 0, 0, 0}, value...) // BS|RT attributes
	if err := os.WriteFile(filepath.Join(dir, name+"-"+GlobalVariableGUID), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSecureBootState(t *testing.T) {
	tests := []struct {
		name     string
		vars     map[string][]byte
		want     SecureBootState
		wantErr  bool
		enrollOK bool
	}{
		{"enabled", map[string][]byte{"SecureBoot": {1}, "SetupMode": {0}}, SecureBootState{true, false}, false, true},
		{"disabled", map[string][]byte{"SecureBoot": {0}, "SetupMode": {0}}, SecureBootState{false, false}, false, false},
		{"setup mode", map[string][]byte{"SecureBoot": {0}, "SetupMode": {1}}, SecureBootState{false, true}, false, false},
		{"on but setup mode", map[string][]byte{"SecureBoot": {1}, "SetupMode": {1}}, SecureBootState{true, true}, false, false},
		{"no variables", map[string][]byte{}, SecureBootState{}, false, false},
		{"truncated", map[string][]byte{"SecureBoot": {}}, SecureBootState{}, true, false},
		{"bad value", map[string][]byte{"SecureBoot": {2}}, SecureBootState{}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for k, v := range tt.vars {
				writeEFIVar(t, dir, k, v...)
			}
			got, err := ReadSecureBootState(dir)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("state = %v, want %v", got, tt.want)
			}
			err = RequireSecureBoot(dir)
			if (err == nil) != tt.enrollOK {
				t.Fatalf("RequireSecureBoot err = %v, want ok=%v", err, tt.enrollOK)
			}
			on, serr := EFIVars{Root: dir}.SecureBootEnabled(context.Background())
			if on != tt.enrollOK || (serr != nil) != tt.wantErr {
				t.Errorf("SecureBootEnabled = %v, %v", on, serr)
			}
			if err != nil && !tt.wantErr && !errors.Is(err, ErrSecureBootOff) {
				t.Errorf("err = %v, want ErrSecureBootOff", err)
			}
		})
	}
}

func TestSecureBootNoEFIVars(t *testing.T) {
	if _, err := ReadSecureBootState(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing efivarfs gave no error")
	}
}
