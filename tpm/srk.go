package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// primaryKey is a transient primary key under the Owner hierarchy. It is
// recreated from its template on every use (never persisted), so the TPM's
// owner seed alone decides its Name.
type primaryKey struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
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
	return &primaryKey{handle: rsp.ObjectHandle, name: rsp.Name, pub: *pub}, nil
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
