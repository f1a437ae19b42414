package tpm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// enrollSystemd seals secret the way systemd-cryptenroll --tpm2-device does
// and returns the token JSON: parent is the primary key systemd would use,
// the policy is PolicyPCR(pcrs) or, with key, PolicyAuthorize(key) then
// PolicyPCR(pcrs); the blob is TPM2B_PRIVATE || TPM2B_PUBLIC.
func enrollSystemd(t *testing.T, tp transport.TPM, parent *primaryKey, alg string, secret []byte, pcrs []int, key *rsa.PrivateKey, srk bool) []byte {
	t.Helper()
	values, err := ReadPCRs(tp, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	var policy []byte
	if key != nil {
		policy, err = SealingPolicy(&key.PublicKey, pcrs, values)
	} else {
		policy, err = PolicyPCRDigest(pcrs, values)
	}
	if err != nil {
		t.Fatal(err)
	}
	priv, pub, err := createSealedObject(tp, parent, secret, policy, false)
	if err != nil {
		t.Fatal(err)
	}
	tok := map[string]any{
		"type":             "systemd-tpm2",
		"keyslots":         []string{"1"},
		"tpm2-blob":        base64.StdEncoding.EncodeToString(append(priv, pub...)),
		"tpm2-pcrs":        pcrs,
		"tpm2-pcr-bank":    "sha256",
		"tpm2-primary-alg": alg,
		"tpm2-policy-hash": hex.EncodeToString(policy),
		"tpm2-pin":         false,
	}
	if key != nil {
		p, err := MarshalPublicKeyPEM(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		tok["tpm2_pubkey"] = base64.StdEncoding.EncodeToString(p)
		tok["tpm2_pubkey_pcrs"] = []int{UKIPCR}
	}
	if srk {
		tok["tpm2_srk"] = base64.StdEncoding.EncodeToString(serializeESYSTR(parent))
	}
	js, err := json.Marshal(tok)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestSystemdToken(t *testing.T) {
	sim := openSimulator(t)
	key, _ := signingKeys(t)
	bootTo(t, sim, "sb", "uki")
	s := NewSealer(sim, &StaticSource{Sigs: signCurrent(t, sim, key)})
	ctx := context.Background()
	want := []byte(base64.StdEncoding.EncodeToString(secret32()))

	persistent := func(t *testing.T) *primaryKey {
		p, err := createPrimary(sim, tpm2.ECCSRKTemplate)
		if err != nil {
			t.Fatal(err)
		}
		defer flush(sim, p.handle)
		if _, err := (tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: p.handle, Name: p.name},
			PersistentHandle: systemdPersistentSRK,
		}).Execute(sim); err != nil {
			t.Fatalf("persist SRK: %v", err)
		}
		return &primaryKey{handle: systemdPersistentSRK, name: p.name, pub: p.pub}
	}

	tests := []struct {
		name   string
		parent func(t *testing.T) *primaryKey
		alg    string
		pcrs   []int
		signed bool
		srk    bool
	}{
		{"252 ecc pcr-only", legacy(sim, tpm2.TPMAlgECC), "ecc", []int{7}, false, false},
		{"252 ecc signed", legacy(sim, tpm2.TPMAlgECC), "ecc", []int{7}, true, false},
		{"252 ecc signed only", legacy(sim, tpm2.TPMAlgECC), "ecc", nil, true, false},
		{"252 rsa pcr-only", legacy(sim, tpm2.TPMAlgRSA), "rsa", []int{7, 15}, false, false},
		{"254 persistent srk signed", persistent, "ecc", []int{7}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := tt.parent(t)
			var k *rsa.PrivateKey
			if tt.signed {
				k = key
			}
			js := enrollSystemd(t, sim, parent, tt.alg, secret32(), tt.pcrs, k, tt.srk)
			if parent.handle != systemdPersistentSRK {
				flush(sim, parent.handle)
			}
			tok, err := ParseSystemdToken(js)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.UnsealSystemd(ctx, tok)
			if err != nil {
				t.Fatalf("unseal: %v\ntoken: %s", err, js)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("passphrase %q, want %q", got, want)
			}
		})
	}

	t.Run("pin refused", func(t *testing.T) {
		tok, err := ParseSystemdToken([]byte(`{"type":"systemd-tpm2","keyslots":["2"],"tpm2-blob":"AAA=","tpm2-pin":true}`))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.UnsealSystemd(ctx, tok); err == nil || !strings.Contains(err.Error(), "PIN") {
			t.Fatalf("err = %v, want a PIN error", err)
		}
	})
	t.Run("changed PCR", func(t *testing.T) {
		p, err := createPrimary(sim, SystemdLegacyPrimary(tpm2.TPMAlgECC))
		if err != nil {
			t.Fatal(err)
		}
		js := enrollSystemd(t, sim, p, "ecc", secret32(), []int{7}, nil, false)
		flush(sim, p.handle)
		d := make([]byte, 32)
		if err := ExtendPCR(sim, 7, d); err != nil {
			t.Fatal(err)
		}
		tok, _ := ParseSystemdToken(js)
		if _, err := s.UnsealSystemd(ctx, tok); !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("err = %v, want ErrPCRMismatch", err)
		}
	})
	t.Run("other parent", func(t *testing.T) {
		p, err := createPrimary(sim, SystemdLegacyPrimary(tpm2.TPMAlgECC))
		if err != nil {
			t.Fatal(err)
		}
		js := enrollSystemd(t, sim, p, "rsa", secret32(), []int{7}, nil, false) // lies about the alg
		flush(sim, p.handle)
		tok, _ := ParseSystemdToken(js)
		if _, err := s.UnsealSystemd(ctx, tok); !errors.Is(err, ErrDifferentTPM) {
			t.Fatalf("err = %v, want ErrDifferentTPM", err)
		}
	})
}

func legacy(tp transport.TPM, alg tpm2.TPMAlgID) func(t *testing.T) *primaryKey {
	return func(t *testing.T) *primaryKey {
		p, err := createPrimary(tp, SystemdLegacyPrimary(alg))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

func TestParseSystemdToken(t *testing.T) {
	for _, bad := range []string{`{`, `{"type":"clevis","tpm2-blob":"AA=="}`, `{"type":"systemd-tpm2"}`} {
		if _, err := ParseSystemdToken([]byte(bad)); err == nil {
			t.Errorf("ParseSystemdToken(%s) succeeded", bad)
		}
	}
	if _, _, err := splitSystemdBlob([]byte{0, 9, 1}); err == nil {
		t.Error("truncated blob split")
	}
}

// serializeESYSTR is a key's ESYS_TR as tpm2-tss's Esys_TR_Serialize writes
// it (systemd's tpm2_srk): TPM handle, TPM2B_NAME, resource type 1 (key),
// TPM2B_PUBLIC.
func serializeESYSTR(k *primaryKey) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(k.handle))
	b = append(b, tpm2.Marshal(k.name)...)
	b = binary.BigEndian.AppendUint32(b, 1)
	return append(b, tpm2.Marshal(tpm2.New2B(k.pub))...)
}

// TestSystemdSRKPinned: a systemd-tpm2 token whose tpm2_srk names another
// SRK is refused with ErrSRKMismatch before the blob is loaded.
func TestSystemdSRKPinned(t *testing.T) {
	sim := openSimulator(t)
	key, _ := signingKeys(t)
	bootTo(t, sim, "sb", "uki")
	w := &watchTPM{tpm: sim}
	s := NewSealer(w, &StaticSource{Sigs: signCurrent(t, sim, key)})
	parent, err := createPrimary(sim, tpm2.ECCSRKTemplate)
	if err != nil {
		t.Fatal(err)
	}
	js := enrollSystemd(t, sim, parent, "ecc", secret32(), []int{7}, key, true)
	other := *parent
	other.name = tpm2.TPM2BName{Buffer: append([]byte{0, 0x0b}, bytes.Repeat([]byte{9}, 32)...)}
	flush(sim, parent.handle)
	tok, err := ParseSystemdToken(js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnsealSystemd(context.Background(), tok); err != nil {
		t.Fatalf("genuine tpm2_srk: %v", err)
	}
	tok.SRK = base64.StdEncoding.EncodeToString(serializeESYSTR(&other))
	w.sent = nil
	_, err = s.UnsealSystemd(context.Background(), tok)
	if !errors.Is(err, ErrSRKMismatch) {
		t.Fatalf("tpm2_srk of another SRK: err = %v, want ErrSRKMismatch", err)
	}
	for _, cc := range w.sent {
		if cc == ccLoad || cc == ccStartAuthSession || cc == ccUnseal {
			t.Errorf("command %#x sent although no parent matched tpm2_srk", cc)
		}
	}
}

// TestSystemdSRKName reads the SRK name out of a tpm2_srk written by
// systemd-cryptenroll (systemd 255, from a published LUKS2 dump): it is the
// Name of the public area serialized after it.
func TestSystemdSRKName(t *testing.T) {
	const real = "gQAAAQAiAAvfr86mWQ4ncWaXV9jUk3nRHRw/bEYnAiQSalhvf/6mpwAAAAEAWgAjAAsAAwRyAAAABgCAAEMAEAADABAAIP6Ye/LshHa6QKXX2NTPu7PEtBsUMnV57+02mjS75wKXACDvxzC6RaHZbojoiA3IzwXNp7vsM285RQApR76fkT8xKA=="
	name, err := systemdSRKName(real)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(real)
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](raw[len(name)+8:])
	if err != nil {
		t.Fatal(err)
	}
	area, err := pub.Contents()
	if err != nil {
		t.Fatal(err)
	}
	want, err := tpm2.ObjectName(area)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(name, tpm2.Marshal(*want)) {
		t.Errorf("tpm2_srk name %x, the Name of its public area is %x", name, tpm2.Marshal(*want))
	}
	for _, bad := range []string{"!!", "gQAA", base64.StdEncoding.EncodeToString([]byte{0x81, 0, 0, 1, 0, 40, 0, 11})} {
		if _, err := systemdSRKName(bad); err == nil {
			t.Errorf("systemdSRKName(%q) succeeded", bad)
		}
	}
}
