package kms

import "testing"

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in       string
		addr     string
		tls      bool
		noScheme bool
		wantErr  bool
	}{
		// No scheme means TLS (Talos: plaintext); plaintext only by name.
		{in: "kms.lan:4050", addr: "kms.lan:4050", tls: true, noScheme: true},
		{in: "grpc://10.0.2.2:4050", addr: "10.0.2.2:4050"},
		{in: "GRPC://kms", addr: "kms:4050"},
		{in: "https://kms.example.com:8443", addr: "kms.example.com:8443", tls: true},
		{in: "https://kms.example.com", addr: "kms.example.com:443", tls: true},
		{in: "tls://kms:4050", addr: "kms:4050", tls: true},
		{in: "[::1]:4050", addr: "[::1]:4050", tls: true, noScheme: true},
		{in: "grpc://[fe80::1]", addr: "[fe80::1]:4050"},
		{in: "kms", addr: "kms:4050", tls: true, noScheme: true},
		{in: "", wantErr: true},
		{in: "https://", wantErr: true},
		{in: "https://kms:4050/path", wantErr: true},
		{in: "kms:4050/x", wantErr: true},
		{in: ":4050", wantErr: true},
	}
	for _, tt := range tests {
		ep, err := ParseEndpoint(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseEndpoint(%q) = %+v, want an error", tt.in, ep)
			}
			continue
		}
		if err != nil || ep.Address != tt.addr || ep.TLS != tt.tls || ep.NoScheme != tt.noScheme {
			t.Errorf("ParseEndpoint(%q) = %+v, %v; want %s tls=%v noScheme=%v", tt.in, ep, err, tt.addr, tt.tls, tt.noScheme)
		}
	}
}
