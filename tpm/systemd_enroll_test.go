package tpm

import (
	"bytes"
	"context"
	"encoding/base64"
	"testing"
)

// TestEnrollSystemd seals with EnrollSystemd to the given (here: current)
// PCR 7 value and unseals through the systemd-tpm2 path; sealed to another
// PCR 7 value it must be refused.
func TestEnrollSystemd(t *testing.T) {
	sim := openSimulator(t)
	bootTo(t, sim, "sb", "uki")
	values, err := ReadPCRs(sim, []int{SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSealer(sim, StaticSource{})
	ctx := context.Background()
	secret := secret32()
	want := []byte(base64.StdEncoding.EncodeToString(secret))

	raw, err := EnrollSystemd(sim, secret, []int{SecureBootPCR}, values, 1)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseSystemdToken(raw)
	if err != nil {
		t.Fatalf("parse our own token %s: %v", raw, err)
	}
	if len(tok.Keyslots) != 1 || tok.Keyslots[0] != "1" || tok.PrimaryAlg != "ecc" || tok.PubKey != "" {
		t.Errorf("token %s: want keyslots [\"1\"], ecc primary, no signed policy", raw)
	}
	got, err := s.UnsealSystemd(ctx, tok)
	if err != nil {
		t.Fatalf("unseal: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("unsealed passphrase differs from base64 of the secret")
	}

	other := [][]byte{bytes.Repeat([]byte{0x42}, 32)}
	raw, err = EnrollSystemd(sim, secret, []int{SecureBootPCR}, other, 1)
	if err != nil {
		t.Fatal(err)
	}
	tok, err = ParseSystemdToken(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnsealSystemd(ctx, tok); err == nil {
		t.Errorf("sealed to another PCR 7 value, unseal succeeded, want a refusal")
	}
	if _, err := EnrollSystemd(sim, nil, []int{SecureBootPCR}, values, 1); err == nil {
		t.Error("empty secret accepted")
	}
}
