package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenBindsNode(t *testing.T) {
	r, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	blob := r.Seal("node-a", secret)
	if bytes.Contains(blob, secret) {
		t.Fatal("blob contains the plaintext")
	}
	got, id, err := r.Open("node-a", blob)
	if err != nil || !bytes.Equal(got, secret) || id != 1 {
		t.Fatalf("Open(node-a) = %q, %d, %v", got, id, err)
	}
	if _, _, err := r.Open("node-b", blob); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("Open(node-b) err = %v, want ErrAuthentication", err)
	}
}

func TestOpenRejects(t *testing.T) {
	r, _ := Generate()
	good := r.Seal("n", []byte("secret"))
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, ErrNotBlob},
		{"short", good[:Overhead-1], ErrNotBlob},
		{"magic", flip(0), ErrNotBlob},
		{"version", flip(4), ErrNotBlob},
		{"key id", flip(8), ErrUnknownKey},
		{"nonce", flip(headerSize), ErrAuthentication},
		{"ciphertext", flip(len(good) - 1), ErrAuthentication},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := r.Open("n", tt.blob); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "keyring.json")
	r1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	old := r1.Seal("n", []byte("old"))
	r2, err := r1.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Save(path); err != nil {
		t.Fatal(err)
	}
	r3, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	if r3.Newest() != 2 || r3.Len() != 2 {
		t.Fatalf("after rotate newest=%d len=%d, want 2, 2", r3.Newest(), r3.Len())
	}
	if got, id, err := r3.Open("n", old); err != nil || string(got) != "old" || id != 1 {
		t.Fatalf("old blob after rotate: %q %d %v", got, id, err)
	}
	fresh := r3.Seal("n", []byte("new"))
	if _, id, err := r3.Open("n", fresh); err != nil || id != 2 {
		t.Fatalf("new blob uses key %d, %v; want 2", id, err)
	}
	// The old ring cannot open what the new key sealed.
	if _, _, err := r1.Open("n", fresh); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old ring on new blob: %v, want ErrUnknownKey", err)
	}
}

func TestLoadRefusesReadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	r, _ := Generate()
	if err := r.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.Is(err, ErrInsecureFile) {
		t.Fatalf("Load of 0644 file: %v, want ErrInsecureFile", err)
	}
}

func TestNewRejectsBadKeys(t *testing.T) {
	k := make([]byte, KeySize)
	for _, keys := range [][]Key{nil, {{ID: 0, Secret: k}}, {{ID: 1, Secret: k[:16]}}, {{ID: 1, Secret: k}, {ID: 1, Secret: k}}} {
		if _, err := New(keys); err == nil {
			t.Errorf("New(%d keys) accepted a bad keyring", len(keys))
		}
	}
}
