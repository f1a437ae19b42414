package tpm

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// primaryKey is a transient primary key under the Owner hierarchy. It is
// recreated from its template on every use (never persisted), so the TPM's
// owner seed alone decides its Name.
type primaryKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName // computed from pub, never taken from the TPM's word
	pub    tpm2.TPMTPublic
}

// createPrimary creates the primary key of template under the Owner hierarchy.
func createPrimary(t transport.TPM, template tpm2.TPMTPublic) (*primaryKey, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(template),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("create SRK: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, rsp.ObjectHandle)
		return nil, fmt.Errorf("create SRK: %w", err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		flush(t, rsp.ObjectHandle)
		return nil, fmt.Errorf("create SRK: name of its public area: %w", err)
	}
	if !bytes.Equal(name.Buffer, rsp.Name.Buffer) {
		// Someone between us and the TPM answered: the public key we would
		// encrypt session salts to is not the key the TPM named.
		flush(t, rsp.ObjectHandle)
		return nil, fmt.Errorf("create SRK: the TPM named it %x but returned a public area named %x: %w", rsp.Name.Buffer, name.Buffer, ErrSRKMismatch)
	}
	return &primaryKey{handle: rsp.ObjectHandle, name: *name, pub: *pub}, nil
}

// pin checks that the primary is the key a secret was sealed under: its
// Name, computed from the public area the TPM returned (TPM2B_NAME = nameAlg
// || H(TPMT_PUBLIC)), equals keyName, the marshalled TPM2B_NAME kept in the
// token. Callers pin before the primary salts any session or loads any
// object, so a substituted key never receives a salt.
func (p *primaryKey) pin(keyName []byte) error {
	want, err := tpm2.Unmarshal[tpm2.TPM2BName](keyName)
	if err != nil || len(want.Buffer) == 0 {
		return fmt.Errorf("token has no valid storage key name (key_name): %w", ErrSRKMismatch)
	}
	if !bytes.Equal(want.Buffer, p.name.Buffer) {
		return fmt.Errorf("storage key name %x, sealed to %x: %w", p.name.Buffer, want.Buffer, ErrSRKMismatch)
	}
	return nil
}

// salted returns an HMAC session salted with the primary key, encrypting
// parameters in direction dir, for one command.
func (p *primaryKey) session(dir tpm2.AuthOption) tpm2.Session {
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.Salted(p.handle, p.pub), dir)
}

// flush frees a transient handle; swtpm and /dev/tpm0 have no resource
// manager, so leaked handles would fill the TPM's object slots.
func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// srkTemplate is the TCG standard ECC P-256 SRK template (Talos and
// systemd ≥ 254 use it).
func srkTemplate() tpm2.TPMTPublic { return tpm2.ECCSRKTemplate }
