package tpm

import (
	"bytes"
	"os"
	"testing"
)

// FuzzUKIEvents: any bytes given as a UKI give events or an error, never a panic.
func FuzzUKIEvents(f *testing.F) {
	if stub, err := os.ReadFile(stubPath); err == nil {
		f.Add(stub)
	}
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := UKIEvents(bytes.NewReader(data))
		if err == nil && len(events) == 0 {
			t.Fatal("no error and no events")
		}
	})
}

// FuzzSystemdToken: token JSON and blobs from a disk are untrusted.
func FuzzSystemdToken(f *testing.F) {
	f.Add([]byte(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AAIAAQACAAE=","tpm2-pcrs":[7]}`))
	f.Add([]byte(`{"sha256":[{"pcrs":[11],"pkfp":"00","pol":"00","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseSignatures(data)
		_, _ = ParsePublicKeyPEM(data)
		_, _, _ = splitSystemdBlob(data)
		if tok, err := ParseSystemdToken(data); err == nil && tok.Blob == "" {
			t.Fatal("token without blob accepted")
		}
	})
}
