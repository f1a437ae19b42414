package config

import "fmt"

// Volume IDs of the system volumes cryptinit handles.
const (
	StateVolume     = "STATE"
	EphemeralVolume = "EPHEMERAL"
)

// Document kinds cryptinit reads.
const (
	KindVolumeConfig     = "VolumeConfig"
	KindUserVolumeConfig = "UserVolumeConfig"
)

// MaxSlot is the highest LUKS2 keyslot number (LUKS2 has 32 slots).
const MaxSlot = 31

// Config is the part of a machine config that cryptinit uses.
type Config struct {
	Volumes  []Volume
	Warnings []Problem // things that work but deserve attention
	// UnknownKinds are documents whose kind neither cryptinit nor Talos
	// knows (also in Warnings): skipped at boot, errors for
	// `cryptctl config validate`.
	UnknownKinds []Problem
	Notes        []Problem // documents of other Talos kinds, skipped
}

// Volume returns the volume with the given ID, or nil.
func (c *Config) Volume(id string) *Volume {
	for i := range c.Volumes {
		if c.Volumes[i].ID == id {
			return &c.Volumes[i]
		}
	}
	return nil
}

// Volume is one VolumeConfig or UserVolumeConfig document.
type Volume struct {
	ID         string      // STATE, EPHEMERAL or u-<name>: the GPT label and mapper suffix
	Kind       string      // KindVolumeConfig or KindUserVolumeConfig
	Name       string      // the document's name field
	Doc        int         // 1-based position of the document in the stream
	Encryption *Encryption // nil: the volume is not encrypted
	Filesystem string      // "xfs" (default) or "ext4"
	MountPoint string      // where boot mounts it; empty: boot's default
	// Trust is set by the code that loaded the config, never by the
	// parser: the zero value is not authenticated, and such a config may
	// open the volume but never change its key slots.
	Trust   Trust
	encPath string // YAML path of the encryption section, for messages

	// DiskSelector is a UserVolumeConfig's provisioning.diskSelector.match
	// (Talos's CEL expression). cryptinit does not evaluate it: a volume
	// that has one may be on any disk (the only partition with its label);
	// one without must be on the node's disk.
	DiskSelector string
}

// Trust says where a volume config came from and whether whoever holds
// the disk could have written it. Only an authenticated config may choose
// the keys that protect a volume: format it, enroll, re-key or remove
// slots. META tag 9 and a file on an unsigned partition are not; the
// signed image's own config, the copy inside an opened STATE and a file
// an operator names to cryptctl are.
type Trust struct {
	Source        string // where the config was read from, for messages
	Authenticated bool
}

// Why says why a config that is not authenticated may not change key
// slots; "" when it may.
func (t Trust) Why() string {
	if t.Authenticated {
		return ""
	}
	src := t.Source
	if src == "" {
		src = "an unnamed source"
	}
	return "config from " + src + " is not authenticated: slot changes need a machine config in the signed image"
}

// Encrypted reports whether the volume has an encryption section.
func (v *Volume) Encrypted() bool { return v.Encryption != nil }

// Encryption is a volume's encryption section.
type Encryption struct {
	Provider      string   `yaml:"provider,omitempty"`
	Keys          []Key    `yaml:"keys,omitempty"`
	Cipher        string   `yaml:"cipher,omitempty"`
	KeySize       int      `yaml:"keySize,omitempty"`   // bits of the volume key
	BlockSize     int      `yaml:"blockSize,omitempty"` // dm-crypt sector size in bytes
	Options       []string `yaml:"options,omitempty"`   // dm-crypt performance options
	AllowDiscards bool     `yaml:"allowDiscards,omitempty"`
	KDF           *KDF     `yaml:"kdf,omitempty"` // cryptinit addition
}

// KDF sets the cost of the key derivation of newly written keyslots
// (cryptinit addition). Zero fields take the LUKS2 engine's defaults.
type KDF struct {
	Type        string `yaml:"type,omitempty"` // argon2id (default), argon2i or pbkdf2
	MemoryKiB   int    `yaml:"memoryKiB,omitempty"`
	Iterations  int    `yaml:"iterations,omitempty"`
	Parallelism int    `yaml:"parallelism,omitempty"`
}

// Key is one entry of encryption.keys: a slot and exactly one key kind.
type Key struct {
	Slot        int        `yaml:"slot"`
	Static      *StaticKey `yaml:"static,omitempty"`
	NodeID      *NodeIDKey `yaml:"nodeID,omitempty"`
	KMS         *KMSKey    `yaml:"kms,omitempty"`
	TPM         *TPMKey    `yaml:"tpm,omitempty"`
	LockToSTATE bool       `yaml:"lockToSTATE,omitempty"`
	Recovery    bool       `yaml:"recovery,omitempty"` // cryptinit addition: sync never removes it
	line        int        // where the key starts in the YAML, for messages
	slotLine    int        // where slot is written; 0 when it is missing
}

// StaticKey is a passphrase written in the config.
type StaticKey struct {
	Passphrase string `yaml:"passphrase"`
}

// NodeIDKey derives the passphrase from the node's SMBIOS UUID.
type NodeIDKey struct{}

// KMSKey seals a random key with a network KMS.
type KMSKey struct {
	Endpoint string `yaml:"endpoint"`
}

// TPMKey seals a random key in the TPM.
type TPMKey struct {
	CheckSecurebootStatusOnEnroll bool        `yaml:"checkSecurebootStatusOnEnroll,omitempty"`
	Options                       *TPMOptions `yaml:"options,omitempty"`
	// ReenrollOnPCRChange (cryptinit addition, default off): when the slot
	// no longer unseals because PCR 7 changed (Secure Boot keys updated),
	// another key opened the volume and Secure Boot is on, sync re-seals the
	// slot to the current PCR 7.
	ReenrollOnPCRChange bool `yaml:"reenrollOnPCRChange,omitempty"`
	// BindPCR15 (cryptinit addition, default true): a key enrolled for this
	// slot is also bound to the PCR 15 latch. false leaves it out, so the
	// token is exactly what Talos writes and Talos opens it (Talos refuses a
	// token bound to a PCR that reads all zeros, as PCR 15 does when STATE
	// is sealed), at the cost of the latch's protection for this slot.
	BindPCR15 *bool `yaml:"bindPCR15,omitempty"`
}

// LatchBound reports whether keys enrolled for t bind the PCR 15 latch.
func (t *TPMKey) LatchBound() bool { return t == nil || t.BindPCR15 == nil || *t.BindPCR15 }

// TPMOptions are the tpm key's options.
type TPMOptions struct {
	PCRs []int `yaml:"pcrs,omitempty"`
}

// Key kind names, as written in the config.
const (
	KindStatic = "static"
	KindNodeID = "nodeID"
	KindKMS    = "kms"
	KindTPM    = "tpm"
)

// Kinds returns the kinds set on the key (exactly one when valid).
func (k *Key) Kinds() []string {
	var kinds []string
	if k.Static != nil {
		kinds = append(kinds, KindStatic)
	}
	if k.NodeID != nil {
		kinds = append(kinds, KindNodeID)
	}
	if k.KMS != nil {
		kinds = append(kinds, KindKMS)
	}
	if k.TPM != nil {
		kinds = append(kinds, KindTPM)
	}
	return kinds
}

// Kind returns the key's kind, or "" when it has none or several.
func (k *Key) Kind() string {
	if kinds := k.Kinds(); len(kinds) == 1 {
		return kinds[0]
	}
	return ""
}

// String describes the key without any secret, e.g. "slot 1 (static, lockToSTATE)".
func (k *Key) String() string {
	s := fmt.Sprintf("slot %d (%s", k.Slot, k.Kind())
	if k.LockToSTATE {
		s += ", lockToSTATE"
	}
	if k.Recovery {
		s += ", recovery"
	}
	return s + ")"
}

// PCRs returns the TPM key's hash-bound PCRs, [7] when unset (Talos's default).
func (t *TPMKey) PCRs() []int {
	if t == nil || t.Options == nil || len(t.Options.PCRs) == 0 {
		return []int{7}
	}
	return t.Options.PCRs
}
