package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cryptinit/cryptinit/unlock/config"
)

// Tag 9 holds STATE's encryption config as JSON. Talos writes its Go
// EncryptionConfig with default (Go field name) keys; that is the shape we
// write. For reading we also accept what we can justify as legacy:
//   - any letter case of the Go names (encoding/json matches keys
//     case-insensitively, which covers writers that lower-cased them);
//   - the machine-config YAML names (provider, keys, slot, static.passphrase,
//     nodeID, kms.endpoint, tpm, lockToSTATE, cipher, keySize, blockSize,
//     options), in case a writer serialised the config with its YAML/JSON tags;
//   - a tpm key without TPMOptions (older Talos bound TPM keys to PCR 7 only,
//     which is also our default).
// When both a Go name and a YAML name are present, the Go name wins.

// stateJSON is tag 9 in Talos's shape plus the legacy names.
type stateJSON struct {
	EncryptionProvider      string    `json:"EncryptionProvider"`
	EncryptionKeys          []keyJSON `json:"EncryptionKeys"`
	EncryptionCipher        string    `json:"EncryptionCipher"`
	EncryptionKeySize       int       `json:"EncryptionKeySize"`
	EncryptionBlockSize     int       `json:"EncryptionBlockSize"`
	EncryptionPerfOptions   []string  `json:"EncryptionPerfOptions"`
	EncryptionAllowDiscards bool      `json:"EncryptionAllowDiscards"`
	CryptinitKDF            *kdfJSON  `json:"CryptinitKDF,omitempty"` // ours; Talos ignores unknown keys

	LegacyProvider  string    `json:"provider,omitempty"`
	LegacyKeys      []keyJSON `json:"keys,omitempty"`
	LegacyCipher    string    `json:"cipher,omitempty"`
	LegacyKeySize   int       `json:"keySize,omitempty"`
	LegacyBlockSize int       `json:"blockSize,omitempty"`
	LegacyOptions   []string  `json:"options,omitempty"`
}

type keyJSON struct {
	KeySlot           int         `json:"KeySlot"`
	KeyStatic         *staticJSON `json:"KeyStatic"`
	KeyNodeID         *struct{}   `json:"KeyNodeID"`
	KeyKMS            *kmsJSON    `json:"KeyKMS"`
	KeyTPM            *tpmJSON    `json:"KeyTPM"`
	KeyLockToSTATE    *bool       `json:"KeyLockToSTATE"`
	CryptinitRecovery bool        `json:"CryptinitRecovery,omitempty"`

	LegacySlot        *int        `json:"slot,omitempty"`
	LegacyStatic      *staticJSON `json:"static,omitempty"`
	LegacyNodeID      *struct{}   `json:"nodeID,omitempty"`
	LegacyKMS         *kmsJSON    `json:"kms,omitempty"`
	LegacyTPM         *tpmJSON    `json:"tpm,omitempty"`
	LegacyLockToSTATE *bool       `json:"lockToSTATE,omitempty"`
}

type staticJSON struct {
	KeyData    string `json:"KeyData"`
	Passphrase string `json:"passphrase,omitempty"`
}

type kmsJSON struct {
	KMSEndpoint string `json:"KMSEndpoint"`
	Endpoint    string `json:"endpoint,omitempty"`
}

type tpmJSON struct {
	TPMOptions                       *tpmOptionsJSON `json:"TPMOptions,omitempty"`
	TPMCheckSecurebootStatusOnEnroll *bool           `json:"TPMCheckSecurebootStatusOnEnroll,omitempty"`
	LegacyOptions                    *tpmOptionsJSON `json:"options,omitempty"`
	LegacyCheckSecureboot            *bool           `json:"checkSecurebootStatusOnEnroll,omitempty"`
}

type tpmOptionsJSON struct {
	PCRs []int `json:"PCRs"`
}

type kdfJSON struct {
	Type        string `json:"Type,omitempty"`
	MemoryKiB   int    `json:"MemoryKiB,omitempty"`
	Iterations  int    `json:"Iterations,omitempty"`
	Parallelism int    `json:"Parallelism,omitempty"`
}

// ErrNoStateConfig: META has no tag 9.
var ErrNoStateConfig = errors.New("META holds no STATE encryption config (tag 9)")

// EncodeStateConfig renders STATE's encryption config as tag 9 JSON.
func EncodeStateConfig(e *config.Encryption) ([]byte, error) {
	s := stateJSON{
		EncryptionProvider:      e.Provider,
		EncryptionCipher:        e.Cipher,
		EncryptionKeySize:       e.KeySize,
		EncryptionBlockSize:     e.BlockSize,
		EncryptionPerfOptions:   e.Options,
		EncryptionAllowDiscards: e.AllowDiscards,
	}
	if s.EncryptionProvider == "" {
		s.EncryptionProvider = "luks2"
	}
	if e.KDF != nil {
		s.CryptinitKDF = &kdfJSON{e.KDF.Type, e.KDF.MemoryKiB, e.KDF.Iterations, e.KDF.Parallelism}
	}
	for _, k := range e.Keys {
		kj := keyJSON{KeySlot: k.Slot, CryptinitRecovery: k.Recovery}
		if k.LockToSTATE {
			t := true
			kj.KeyLockToSTATE = &t
		}
		switch {
		case k.Static != nil:
			kj.KeyStatic = &staticJSON{KeyData: k.Static.Passphrase}
		case k.NodeID != nil:
			kj.KeyNodeID = &struct{}{}
		case k.KMS != nil:
			kj.KeyKMS = &kmsJSON{KMSEndpoint: k.KMS.Endpoint}
		case k.TPM != nil:
			check := k.TPM.CheckSecurebootStatusOnEnroll
			kj.KeyTPM = &tpmJSON{TPMCheckSecurebootStatusOnEnroll: &check}
			if k.TPM.Options != nil && len(k.TPM.Options.PCRs) > 0 {
				kj.KeyTPM.TPMOptions = &tpmOptionsJSON{PCRs: k.TPM.Options.PCRs}
			}
		}
		s.EncryptionKeys = append(s.EncryptionKeys, kj)
	}
	return json.Marshal(s)
}

// DecodeStateConfig parses tag 9 JSON (current or legacy shape) and checks
// it with the machine-config rules.
func DecodeStateConfig(data []byte) (*config.Encryption, error) {
	var s stateJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("META tag 9 (STATE encryption config): %w", err)
	}
	e := &config.Encryption{
		Provider:      first(s.EncryptionProvider, s.LegacyProvider),
		Cipher:        first(s.EncryptionCipher, s.LegacyCipher),
		KeySize:       firstInt(s.EncryptionKeySize, s.LegacyKeySize),
		BlockSize:     firstInt(s.EncryptionBlockSize, s.LegacyBlockSize),
		Options:       s.EncryptionPerfOptions,
		AllowDiscards: s.EncryptionAllowDiscards,
	}
	if e.Options == nil {
		e.Options = s.LegacyOptions
	}
	if s.CryptinitKDF != nil {
		e.KDF = &config.KDF{Type: s.CryptinitKDF.Type, MemoryKiB: s.CryptinitKDF.MemoryKiB,
			Iterations: s.CryptinitKDF.Iterations, Parallelism: s.CryptinitKDF.Parallelism}
	}
	keys := s.EncryptionKeys
	if keys == nil {
		keys = s.LegacyKeys
	}
	for _, kj := range keys {
		k := config.Key{Slot: kj.KeySlot, Recovery: kj.CryptinitRecovery}
		if kj.LegacySlot != nil && kj.KeySlot == 0 {
			k.Slot = *kj.LegacySlot
		}
		if lock := firstBool(kj.KeyLockToSTATE, kj.LegacyLockToSTATE); lock != nil {
			k.LockToSTATE = *lock
		}
		if st := firstPtr(kj.KeyStatic, kj.LegacyStatic); st != nil {
			k.Static = &config.StaticKey{Passphrase: first(st.KeyData, st.Passphrase)}
		}
		if firstPtr(kj.KeyNodeID, kj.LegacyNodeID) != nil {
			k.NodeID = &config.NodeIDKey{}
		}
		if km := firstPtr(kj.KeyKMS, kj.LegacyKMS); km != nil {
			k.KMS = &config.KMSKey{Endpoint: first(km.KMSEndpoint, km.Endpoint)}
		}
		if t := firstPtr(kj.KeyTPM, kj.LegacyTPM); t != nil {
			k.TPM = &config.TPMKey{}
			if c := firstBool(t.TPMCheckSecurebootStatusOnEnroll, t.LegacyCheckSecureboot); c != nil {
				k.TPM.CheckSecurebootStatusOnEnroll = *c
			}
			if o := firstPtr(t.TPMOptions, t.LegacyOptions); o != nil && len(o.PCRs) > 0 {
				k.TPM.Options = &config.TPMOptions{PCRs: o.PCRs}
			}
		}
		e.Keys = append(e.Keys, k)
	}
	if err := config.ValidateEncryption(config.StateVolume, e); err != nil {
		return nil, fmt.Errorf("META tag 9 (STATE encryption config): %w", err)
	}
	return e, nil
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func firstInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

func firstBool(a, b *bool) *bool {
	if a != nil {
		return a
	}
	return b
}

func firstPtr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}
