package tpm

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// rcTPM answers every command with response code rc (or err), after
// answering the first commands with the codes in first.
type rcTPM struct {
	rc    uint32
	err   error
	first []uint32
}

func (f *rcTPM) Send([]byte) ([]byte, error) {
	rc := f.rc
	if len(f.first) > 0 {
		rc, f.first = f.first[0], f.first[1:]
	} else if f.err != nil {
		return nil, f.err
	}
	rsp := make([]byte, 10)
	binary.BigEndian.PutUint16(rsp[0:], uint16(tpm2.TPMSTNoSessions))
	binary.BigEndian.PutUint32(rsp[2:], 10)
	binary.BigEndian.PutUint32(rsp[6:], rc)
	return rsp, nil
}

// TestClevisLoadErrors: only an integrity failure of TPM2_Load means the
// JWK was sealed by another TPM; a blob the TPM refuses to decode is a
// damaged token, and a TPM busy or unreachable is neither.
func TestClevisLoadErrors(t *testing.T) {
	const param1 = 0x040 | 0x100 // TPM_RC_P, parameter 1 (inPrivate)
	pub := tpm2.New2B(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgKeyedHash, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, UserWithAuth: true},
	})
	parent := &primaryKey{handle: 0x80000000, name: tpm2.TPM2BName{Buffer: append([]byte{0x00, 0x0b}, make([]byte, 32)...)}}
	for _, c := range []struct {
		name                 string
		rsp                  *rcTPM
		differentTPM, broken bool
	}{
		{"TPM_RC_INTEGRITY on inPrivate", &rcTPM{rc: uint32(tpm2.TPMRCIntegrity) | param1}, true, false},
		{"TPM_RC_INTEGRITY", &rcTPM{rc: uint32(tpm2.TPMRCIntegrity)}, true, false},
		{"TPM_RC_SIZE on inPrivate", &rcTPM{rc: uint32(tpm2.TPMRCSize) | param1}, false, true},
		{"TPM_RC_INSUFFICIENT", &rcTPM{rc: uint32(tpm2.TPMRCInsufficient) | param1}, false, true},
		{"TPM_RC_BINDING", &rcTPM{rc: uint32(tpm2.TPMRCBinding) | param1}, false, true},
		{"TPM_RC_VALUE", &rcTPM{rc: uint32(tpm2.TPMRCValue) | 0x040 | 0x200}, false, true},
		{"TPM_RC_OBJECT_MEMORY (warning)", &rcTPM{rc: uint32(tpm2.TPMRCObjectMemory)}, false, false},
		{"transport", &rcTPM{err: errors.New("connection reset")}, false, false},
		// a TPM still testing after startup asks for the command again:
		// the answer to the retried one counts (swtpm: another TPM's blob)
		{"TPM_RC_RETRY, then TPM_RC_INTEGRITY", &rcTPM{first: []uint32{uint32(tpm2.TPMRCRetry), uint32(tpm2.TPMRCTesting)}, rc: uint32(tpm2.TPMRCIntegrity) | param1}, true, false},
		{"TPM_RC_RETRY always", &rcTPM{rc: uint32(tpm2.TPMRCRetry)}, false, false},
	} {
		_, err := unsealClevisOnce(c.rsp, parent, &tpm2.TPM2BPrivate{Buffer: []byte{1, 2, 3}}, &pub, tpm2.TPMAlgSHA256, nil)
		if err == nil {
			t.Fatalf("%s: loaded", c.name)
		}
		if got := errors.Is(err, ErrDifferentTPM); got != c.differentTPM {
			t.Errorf("%s: ErrDifferentTPM = %v, want %v (err %v)", c.name, got, c.differentTPM, err)
		}
		if got := errors.Is(err, ErrMalformedBlob); got != c.broken {
			t.Errorf("%s: ErrMalformedBlob = %v, want %v (err %v)", c.name, got, c.broken, err)
		}
		if !errors.Is(err, errLoad) {
			t.Errorf("%s: %v does not say the load failed", c.name, err)
		}
	}
}
