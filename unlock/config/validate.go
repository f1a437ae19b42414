package config

import (
	"fmt"
	"slices"
	"strings"
)

// Problem is one finding of validation: where it is, what is wrong and how
// to fix it.
type Problem struct {
	Doc     int    // 1-based document number
	Volume  string // volume ID or document name
	Field   string // e.g. encryption.keys[1].slot
	Line    int    // YAML line, 0 when unknown
	Msg     string
	Fix     string
	Warning bool // true: allowed, but worth knowing

	note        bool // a document of another Talos kind, skipped (Config.Notes)
	unknownKind bool // a document of an unknown kind (Config.UnknownKinds)
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Doc > 0 {
		fmt.Fprintf(&b, "document %d (%s)", p.Doc, p.Volume)
	} else {
		fmt.Fprintf(&b, "volume %s", p.Volume)
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, " line %d", p.Line)
	}
	if p.Field != "" {
		fmt.Fprintf(&b, " %s", p.Field)
	}
	fmt.Fprintf(&b, ": %s", p.Msg)
	if p.Fix != "" {
		fmt.Fprintf(&b, "; fix: %s", p.Fix)
	}
	return b.String()
}

// Error lists every validation error of a machine config.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if len(lines) == 1 {
		return "invalid volume config: " + lines[0]
	}
	return fmt.Sprintf("invalid volume config (%d problems):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// validate checks the rules a machine config must follow beyond its syntax.
func validate(cfg *Config) []Problem {
	var probs []Problem
	seen := map[string]int{}
	for i := range cfg.Volumes {
		v := &cfg.Volumes[i]
		add := func(field string, line int, warning bool, msg, fix string) {
			probs = append(probs, Problem{Doc: v.Doc, Volume: v.ID, Field: field, Line: line, Msg: msg, Fix: fix, Warning: warning})
		}
		if prev, dup := seen[v.ID]; dup {
			add("name", 0, false, fmt.Sprintf("volume %s is already configured by document %d", v.ID, prev), "keep one document per volume")
		}
		seen[v.ID] = v.Doc
		switch v.Filesystem {
		case "", "xfs", "ext4":
		default:
			add("filesystem.type", 0, false, fmt.Sprintf("filesystem %q is not supported", v.Filesystem), "use xfs or ext4")
		}
		if v.Encryption != nil {
			validateEncryption(v, add)
		}
	}
	return probs
}

func validateEncryption(v *Volume, add0 func(field string, line int, warning bool, msg, fix string)) {
	e := v.Encryption
	// fields are named "encryption.x" below; volumes from
	// machine.systemDiskEncryption name their own path
	add := func(field string, line int, warning bool, msg, fix string) {
		if v.encPath != "" {
			field = v.encPath + strings.TrimPrefix(field, "encryption")
		}
		add0(field, line, warning, msg, fix)
	}
	switch e.Provider {
	case "", "luks2":
	default:
		add("encryption.provider", 0, false, fmt.Sprintf("provider %q is not supported", e.Provider), "use provider: luks2")
	}
	switch e.Cipher {
	case "", "aes-xts-plain64":
	default:
		add("encryption.cipher", 0, true, fmt.Sprintf("cipher %q: cryptinit formats new volumes with aes-xts-plain64 only (existing volumes open with their own cipher)", e.Cipher),
			"leave cipher out or set aes-xts-plain64")
	}
	for _, o := range e.Options {
		switch o {
		case "no_read_workqueue", "no_write_workqueue", "same_cpu_crypt", "submit_from_crypt_cpus":
		default:
			add("encryption.options", 0, false, fmt.Sprintf("unknown dm-crypt option %q", o),
				"use no_read_workqueue, no_write_workqueue, same_cpu_crypt or submit_from_crypt_cpus")
		}
	}
	switch e.KeySize {
	case 0, 256, 512:
	default:
		add("encryption.keySize", 0, false, fmt.Sprintf("key size %d bits is not supported", e.KeySize), "use 256 or 512 (aes-xts), or leave it out for 512")
	}
	switch e.BlockSize {
	case 0, 512, 1024, 2048, 4096:
	default:
		add("encryption.blockSize", 0, false, fmt.Sprintf("block size %d is not supported", e.BlockSize), "use 512, 1024, 2048 or 4096, or leave it out")
	}
	if k := e.KDF; k != nil {
		switch k.Type {
		case "", "argon2id", "argon2i", "pbkdf2":
		default:
			add("encryption.kdf.type", 0, false, fmt.Sprintf("KDF %q is not supported", k.Type), "use argon2id, argon2i or pbkdf2")
		}
		if k.MemoryKiB < 0 || k.Iterations < 0 || k.Parallelism < 0 {
			add("encryption.kdf", 0, false, "KDF costs cannot be negative", "use positive numbers or leave them out for the defaults")
		}
		const cryptsetupDefaults = "cryptsetup's defaults: argon2id benchmarked to 2 s with up to 1 GiB (1048576 KiB) and 4 threads, pbkdf2 benchmarked to 2 s (millions of iterations); cryptinit's: argon2id 256 MiB x4 passes, pbkdf2 600000"
		if k.Type != "pbkdf2" && k.MemoryKiB > 0 && k.MemoryKiB < 64*1024 {
			add("encryption.kdf.memoryKiB", 0, true, fmt.Sprintf("argon2 memory %d KiB is under 64 MiB: each guess of the passphrase costs an attacker little (%s)", k.MemoryKiB, cryptsetupDefaults),
				"raise memoryKiB to 65536 or more, or leave it out for the default")
		}
		if k.Type == "pbkdf2" && k.Iterations > 0 && k.Iterations < 100000 {
			add("encryption.kdf.iterations", 0, true, fmt.Sprintf("pbkdf2 with %d iterations (under 100,000) is cheap to brute-force (%s)", k.Iterations, cryptsetupDefaults),
				"raise iterations to 600000 or more, leave them out, or use argon2id")
		}
		if k.MemoryKiB > 4*1024*1024 {
			add("encryption.kdf.memoryKiB", 0, false, "memory cost above 4 GiB (the LUKS2 limit)", "use at most 4194304")
		}
	}
	if len(e.Keys) == 0 {
		add("encryption.keys", 0, false, "no keys: the volume could never be opened",
			"add at least one key, e.g. keys: [{slot: 0, nodeID: {}}]")
	}
	slots := map[int]int{}
	for i := range e.Keys {
		k := &e.Keys[i]
		field := fmt.Sprintf("encryption.keys[%d]", i)
		missingSlot := k.line != 0 && k.slotLine == 0 // parsed from YAML without slot:
		if missingSlot {
			add(field+".slot", k.line, false, "the key has no slot", "every key needs slot: N (0..31); key order does not pick slots")
		}
		if k.Slot < 0 || k.Slot > MaxSlot {
			add(field+".slot", k.slotLine, false, fmt.Sprintf("slot %d is outside 0..%d", k.Slot, MaxSlot), "LUKS2 has 32 keyslots: use a slot from 0 to 31")
		} else if prev, dup := slots[k.Slot]; dup && !missingSlot {
			add(field+".slot", k.slotLine, false, fmt.Sprintf("slot %d is already used by keys[%d]", k.Slot, prev), "give each key its own slot")
		} else {
			slots[k.Slot] = i
		}
		switch kinds := k.Kinds(); len(kinds) {
		case 0:
			add(field, k.line, false, "the key has no kind", "set exactly one of static, nodeID, kms, tpm")
		case 1:
		default:
			add(field, k.line, false, fmt.Sprintf("the key has %d kinds (%s)", len(kinds), strings.Join(kinds, ", ")),
				"one key entry holds exactly one kind: split it into keys with their own slots")
		}
		if k.LockToSTATE && v.ID == StateVolume {
			add(field+".lockToSTATE", k.line, false, "STATE cannot be locked to itself: its salt lives inside it",
				"remove lockToSTATE from STATE's keys (use it on EPHEMERAL and user volumes)")
		}
		if k.Static != nil {
			if k.Static.Passphrase == "" {
				add(field+".static.passphrase", k.line, false, "empty static passphrase", "set a passphrase or use another key kind")
			}
			if v.ID == StateVolume {
				add(field+".static", k.line, true, "a static key on STATE is stored in clear text in META, so it protects STATE from nothing that can read the disk",
					"prefer nodeID, tpm or kms for STATE")
			}
		}
		if k.KMS != nil && k.KMS.Endpoint == "" {
			add(field+".kms.endpoint", k.line, false, "the kms key has no endpoint", "set kms.endpoint, e.g. https://kms.example:4050")
		}
		if k.KMS != nil && k.KMS.Endpoint != "" {
			if msg, fix := kmsEndpointWarning(k.KMS.Endpoint); msg != "" {
				add(field+".kms.endpoint", k.line, true, msg, fix)
			}
		}
		if k.TPM != nil && k.TPM.Options != nil {
			for _, pcr := range k.TPM.Options.PCRs {
				if pcr < 0 || pcr > 23 {
					add(field+".tpm.options.pcrs", k.line, false, fmt.Sprintf("PCR %d does not exist", pcr), "use PCRs 0..23 (default [7])")
				}
			}
		}
		if k.TPM != nil && !k.TPM.LatchBound() {
			add(field+".tpm.bindPCR15", k.line, true,
				"bindPCR15: false enrolls this slot without the PCR 15 latch, exactly as Talos does: Talos can open it, but a planted STATE or a second volume asking in the same boot can also unseal it",
				"keep the default (true) unless the disk must open on Talos too")
		}
		if k.TPM != nil && k.TPM.ReenrollOnPCRChange {
			// PCR 15 is bound to every enrolled key; the token's sealed
			// values tell a PCR 7 change from a PCR 15 one
			if pcrs := k.TPM.PCRs(); slices.ContainsFunc(pcrs, func(p int) bool { return p != 7 && p != 15 }) {
				add(field+".tpm.reenrollOnPCRChange", k.line, true,
					fmt.Sprintf("reenrollOnPCRChange acts only on keys bound to PCR 7 alone (and the PCR 15 latch), this one is bound to %v: the slot is re-enrolled only when PCR 7 alone changed", pcrs),
					"bind the key to options: {pcrs: [7]} or drop reenrollOnPCRChange")
			}
		}
	}
}

// kmsEndpointWarning explains what a KMS endpoint's scheme means when that
// deserves a warning: grpc:// is plaintext (the sealed blob and the node
// UUID cross the network in clear), and a bare host:port is TLS for
// cryptinit where Talos reads it as plaintext.
func kmsEndpointWarning(endpoint string) (msg, fix string) {
	ep := strings.TrimSpace(endpoint)
	scheme, rest, hasScheme := strings.Cut(ep, "://")
	switch {
	case hasScheme && strings.EqualFold(scheme, "grpc"):
		return fmt.Sprintf("kms endpoint %s is plaintext gRPC: the sealed blob, the unsealed key and the node UUID cross the network in clear", ep),
			fmt.Sprintf("serve the KMS over TLS and write https://%s (CA bundle in the image at /etc/cryptinit/kms-ca.pem); keep grpc:// only on a network you trust", rest)
	case !hasScheme:
		return fmt.Sprintf("kms endpoint %s has no scheme: cryptinit connects with TLS, where Talos uses plaintext", ep),
			fmt.Sprintf("if this KMS serves plaintext gRPC (a Talos config written for it), write grpc://%s; for TLS write https://%s to say so", ep, ep)
	}
	return "", ""
}

// ValidateEncryption checks an encryption section that did not come from
// YAML (e.g. STATE's config read from META) with the same rules.
func ValidateEncryption(volumeID string, e *Encryption) error {
	v := &Volume{ID: volumeID, Encryption: e}
	var probs []Problem
	validateEncryption(v, func(field string, line int, warning bool, msg, fix string) {
		if !warning {
			probs = append(probs, Problem{Volume: volumeID, Field: field, Msg: msg, Fix: fix})
		}
	})
	if len(probs) > 0 {
		return &Error{Problems: probs}
	}
	return nil
}
