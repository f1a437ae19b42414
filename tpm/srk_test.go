package tpm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Command codes the SRK pinning tests watch for.
const (
	ccCreatePrimary    = 0x131
	ccLoad             = 0x157
	ccUnseal           = 0x15E
	ccStartAuthSession = 0x176
)

// watchTPM records the command codes sent to a TPM and, when swapPublic is
// set, answers CreatePrimary with that public area in place of the TPM's
// (the TPM's Name left as it is): an interposer on the TPM bus.
type watchTPM struct {
	tpm        transport.TPM
	sent       []uint32
	swapPublic []byte // marshalled TPM2B_PUBLIC, same length as the SRK's
}

func (w *watchTPM) Send(cmd []byte) ([]byte, error) {
	cc := binary.BigEndian.Uint32(cmd[6:10])
	w.sent = append(w.sent, cc)
	rsp, err := w.tpm.Send(cmd)
	if err != nil || cc != ccCreatePrimary || w.swapPublic == nil || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
		return rsp, err
	}
	// header (10), object handle (4), parameter size (4), then outPublic
	n := 2 + int(binary.BigEndian.Uint16(rsp[18:20]))
	if n != len(w.swapPublic) {
		return nil, errors.New("watchTPM: substitute public area has another length")
	}
	out := bytes.Clone(rsp)
	copy(out[18:18+n], w.swapPublic)
	return out, nil
}

// sentAfterLast returns the commands sent after the last CreatePrimary.
func (w *watchTPM) sentAfterLast() []uint32 {
	for i := len(w.sent) - 1; i >= 0; i-- {
		if w.sent[i] == ccCreatePrimary {
			return w.sent[i+1:]
		}
	}
	return nil
}

// TestSRKPinning checks that Unseal compares the Name of the storage key,
// computed from the public area the TPM returned, with the token's key_name
// and refuses a mismatch with ErrSRKMismatch before the key salts a session
// or loads the sealed object.
func TestSRKPinning(t *testing.T) {
	sim := openSimulator(t)
	w := &watchTPM{tpm: sim}
	s, sealed := sealInInitrd(t, w)
	ctx := context.Background()
	if _, err := s.Unseal(ctx, sealed); err != nil {
		t.Fatalf("genuine unseal: %v", err)
	}

	// Another ECC P-256 key with the same template shape: its public area
	// has the same length as the SRK's, so an interposer can swap it in.
	tmpl := tpm2.ECCSRKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{0xa5}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{0x5a}, 32)},
	})
	other, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	flush(sim, other.ObjectHandle)

	alteredName := *sealed
	name := bytes.Clone(sealed.KeyName)
	name[len(name)-1] ^= 1
	alteredName.KeyName = name
	noName := *sealed
	noName.KeyName = nil

	tests := []struct {
		name   string
		sealed *Sealed
		swap   []byte
	}{
		{"key_name altered", &alteredName, nil},
		{"key_name missing", &noName, nil},
		{"interposer returns another public key under the SRK's Name", sealed, tpm2.Marshal(other.OutPublic)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.swapPublic = tt.swap
			defer func() { w.swapPublic = nil }()
			got, err := s.Unseal(ctx, tt.sealed)
			if !errors.Is(err, ErrSRKMismatch) {
				t.Fatalf("unseal = %x, %v; want ErrSRKMismatch", got, err)
			}
			for _, cc := range w.sentAfterLast() {
				switch cc {
				case ccLoad, ccStartAuthSession, ccUnseal:
					t.Errorf("command %#x sent after the storage key failed its check", cc)
				}
			}
			t.Logf("%s: %v", tt.name, err)
		})
	}
}
