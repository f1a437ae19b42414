package unlock

import (
	"bytes"
	"context"
	"errors"

	"github.com/cryptinit/cryptinit/tpm"
)

// fakeKMS seals by prefixing the node UUID: enough to test the engine.
type fakeKMS struct{ down bool }

func (f *fakeKMS) Seal(_ context.Context, _, node string, data []byte) ([]byte, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	return append([]byte(node+"|"), data...), nil
}

func (f *fakeKMS) Unseal(_ context.Context, _, node string, sealed []byte) ([]byte, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	if !bytes.HasPrefix(sealed, []byte(node+"|")) {
		return nil, errors.New("denied")
	}
	return bytes.Clone(sealed[len(node)+1:]), nil
}

// fakeTPM keeps the secret in Private; forget simulates a different TPM.
type fakeTPM struct{ forget bool }

func (f *fakeTPM) Seal(_ context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error) {
	return &tpm.Sealed{Private: bytes.Clone(secret), Public: []byte{1}, PCRs: pcrs, PubKeyPCRs: []int{11}, Alg: "sha256", EncryptionVersion: "1"}, nil
}

func (f *fakeTPM) Unseal(_ context.Context, s *tpm.Sealed) ([]byte, error) {
	if f.forget {
		return nil, errors.New("TPM_RC_INTEGRITY")
	}
	return bytes.Clone(s.Private), nil
}
