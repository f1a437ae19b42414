package keys

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/config"
)

// KMS seals and unseals data with a network KMS (the netboot/kms client
// implements it).
type KMS interface {
	Seal(ctx context.Context, endpoint, nodeUUID string, data []byte) ([]byte, error)
	Unseal(ctx context.Context, endpoint, nodeUUID string, sealed []byte) ([]byte, error)
}

// TPM seals and unseals secrets in the TPM (the tpm package implements it).
type TPM interface {
	Seal(ctx context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error)
	Unseal(ctx context.Context, s *tpm.Sealed) ([]byte, error)
}

// SecureBoot reports whether UEFI Secure Boot is enabled (for tpm keys with
// checkSecurebootStatusOnEnroll).
type SecureBoot interface {
	SecureBootEnabled(ctx context.Context) (bool, error)
}

// Env holds what the key kinds need from the machine. Nil members make the
// kinds that need them report ErrKeyUnavailable.
type Env struct {
	NodeUUID   UUIDSource
	KMS        KMS
	TPM        TPM
	SecureBoot SecureBoot
	Salt       SaltSource // lockToSTATE: STATE's salt
	PIN        PINPrompt  // TPM PINs of systemd-tpm2 tokens; nil: not asked
	Rand       io.Reader  // nil: crypto/rand
}

func (e *Env) rand() io.Reader {
	if e.Rand != nil {
		return e.Rand
	}
	return rand.Reader
}

// FromConfig builds the Key for one configured key.
func FromConfig(k config.Key, env *Env) (Key, error) {
	var key Key
	switch {
	case k.Static != nil:
		key = &Static{Secret: []byte(k.Static.Passphrase)}
	case k.NodeID != nil:
		key = &NodeID{UUID: env.NodeUUID}
	case k.KMS != nil:
		key = &KMSKey{Endpoint: k.KMS.Endpoint, KMS: env.KMS, NodeUUID: env.NodeUUID, Rand: env.rand()}
	case k.TPM != nil:
		key = &TPMKey{PCRs: k.TPM.PCRs(), NoLatch: !k.TPM.LatchBound(), CheckSecureBoot: k.TPM.CheckSecurebootStatusOnEnroll,
			TPM: env.TPM, SecureBoot: env.SecureBoot, Rand: env.rand(), PIN: env.PIN}
	default:
		return nil, fmt.Errorf("slot %d: key has no kind", k.Slot)
	}
	if k.LockToSTATE {
		key = &LockedToSTATE{Inner: key, Salt: env.Salt}
	}
	return key, nil
}
