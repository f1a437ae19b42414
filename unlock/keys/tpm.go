package keys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cryptinit/cryptinit/tpm"
)

// TPMKey is a 32-byte random key sealed in the TPM; the sealed object is
// kept in a talos-tpm2 token and the passphrase is the key in standard base64.
type TPMKey struct {
	PCRs            []int // hash-bound PCRs (default [7]); Enroll adds PCR 15 unless NoLatch
	NoLatch         bool  // enroll without the PCR 15 latch (config bindPCR15: false), as Talos does
	CheckSecureBoot bool  // refuse to enroll with Secure Boot off
	TPM             TPM
	SecureBoot      SecureBoot
	Rand            io.Reader
	PIN             PINPrompt // asks for the PIN of a systemd-tpm2 PIN token; nil: none can be opened
}

// PINPrompt asks the person at the console for a TPM PIN (boot/console's
// Prompter implements it). The caller zeroes the returned bytes.
type PINPrompt interface {
	TPMPIN(volume string, try, tries int) ([]byte, error)
}

// PINTries is how often a wrong TPM PIN is asked again. The TPM itself
// refuses a try that could lock it out (tpm.ErrPINLockout).
const PINTries = 3

// TPMTokenData is the talos-tpm2 token's UserData (Go []byte = base64).
type TPMTokenData struct {
	KeySlots          []int  `json:"keyslots"`
	SealedBlobPrivate []byte `json:"sealed_blob_private"`
	SealedBlobPublic  []byte `json:"sealed_blob_public"`
	PCRs              []int  `json:"pcrs,omitempty"`
	PubKeyPCRs        []int  `json:"pubkey_pcrs"`
	Alg               string `json:"alg"`
	EncryptionVersion string `json:"encryption_version,omitempty"`
	PolicyHash        []byte `json:"policy_hash"`
	KeyName           []byte `json:"key_name"`
	// PCRValues (cryptinit's addition, Talos ignores it) are the values of
	// PCRs at sealing, so a failed unseal can tell which PCR changed.
	PCRValues [][]byte `json:"cryptinit_pcr_values,omitempty"`
}

// Kind implements Key.
func (*TPMKey) Kind() string { return "tpm" }

// SystemdTPM is a TPM that can also unseal systemd-cryptenroll's
// systemd-tpm2 tokens (tpm.Sealer can), returning the LUKS passphrase.
type SystemdTPM interface {
	UnsealSystemd(ctx context.Context, tok *tpm.SystemdToken) ([]byte, error)
}

// ClevisTPM is a TPM that can also decrypt the JWE of a clevis token's
// tpm2 pin (tpm.Sealer can), returning the LUKS passphrase.
type ClevisTPM interface {
	UnsealClevis(ctx context.Context, tok *tpm.ClevisToken) ([]byte, error)
}

// SystemdPINTPM can also unseal systemd-tpm2 tokens that need a TPM PIN
// (tpm.Sealer can).
type SystemdPINTPM interface {
	UnsealSystemdPIN(ctx context.Context, tok *tpm.SystemdToken, pin []byte) ([]byte, error)
}

// TokenSystemdTPM is the token type systemd-cryptenroll --tpm2-device writes.
const TokenSystemdTPM = "systemd-tpm2"

// TokenClevis is the token type clevis luks bind writes.
const TokenClevis = "clevis"

// Passphrase implements Key. A slot without a talos-tpm2 token but with a
// systemd-tpm2 or clevis token assigned to it is opened the systemd or the
// clevis way, so volumes enrolled with systemd-cryptenroll or clevis luks
// bind (tpm2 pin) open too.
func (k *TPMKey) Passphrase(ctx context.Context, s Slot) ([]byte, error) {
	if TokenType(s.Token) != TokenTPM {
		for _, raw := range s.Assigned {
			switch TokenType(raw) {
			case TokenSystemdTPM:
				return k.systemdPassphrase(ctx, s, raw)
			case TokenClevis:
				return k.clevisPassphrase(ctx, s, raw)
			}
		}
	}
	var ud TPMTokenData
	if err := decodeToken(s, TokenTPM, &ud); err != nil {
		return nil, err
	}
	if k.TPM == nil {
		return nil, fmt.Errorf("%w: no TPM", ErrKeyUnavailable)
	}
	sealed := SealedFromToken(ud)
	key, err := k.TPM.Unseal(ctx, sealed)
	if err != nil {
		if errors.Is(err, tpm.ErrSRKMismatch) {
			return nil, fmt.Errorf("%w: %s slot %d: tpm unseal: %w", ErrKeyUnavailable, s.VolumeID, s.Slot, err)
		}
		if errors.Is(err, tpm.ErrPCRMismatch) && onlySecureBootPCRChanged(sealed, err) {
			return nil, fmt.Errorf("%w: %w: slot %d: tpm unseal: %w", ErrKeyUnavailable, ErrSealedStateChanged, s.Slot, err)
		}
		return nil, fmt.Errorf("%w: tpm unseal: %w", ErrKeyUnavailable, err)
	}
	defer Zero(key)
	return encodeKey(key), nil
}

// Enroll implements Key.
func (k *TPMKey) Enroll(ctx context.Context, s Slot) (*Enrollment, error) {
	if k.TPM == nil {
		return nil, fmt.Errorf("%w: no TPM", ErrKeyUnavailable)
	}
	if k.CheckSecureBoot {
		if k.SecureBoot == nil {
			return nil, fmt.Errorf("%w: tpm: cannot check Secure Boot state", ErrSecureBootOff)
		}
		on, err := k.SecureBoot.SecureBootEnabled(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: tpm: Secure Boot state: %w", ErrSecureBootOff, err)
		}
		if !on {
			return nil, fmt.Errorf("%w: tpm key not enrolled (checkSecurebootStatusOnEnroll)", ErrSecureBootOff)
		}
	}
	key := make([]byte, 32)
	defer Zero(key)
	if _, err := io.ReadFull(k.Rand, key); err != nil {
		return nil, fmt.Errorf("tpm: random key: %w", err)
	}
	sealed, err := k.TPM.Seal(ctx, key, k.enrollPCRs())
	if err != nil {
		return nil, fmt.Errorf("%w: tpm seal: %w", ErrKeyUnavailable, err)
	}
	token, err := encodeToken(TokenTPM, TokenFromSealed(sealed, s.Slot))
	if err != nil {
		return nil, err
	}
	return &Enrollment{Passphrase: encodeKey(key), Token: token}, nil
}

// enrollPCRs are the PCRs a new key is bound to by hash: the configured
// ones ([7] by default) and the PCR 15 latch (unless NoLatch), at the value
// it holds when the key is enrolled. The boot enrolls a volume's key at the volume's
// place in the sequence (STATE before any latch, the others after STATE's),
// so a genuine later boot finds the same value there, while a planted or
// swapped STATE latches another value and no later key unseals.
func (k *TPMKey) enrollPCRs() []int {
	pcrs := slices.Clone(k.PCRs)
	if len(pcrs) == 0 {
		pcrs = tpm.DefaultPCRs()
	}
	if !k.NoLatch && !slices.Contains(pcrs, tpm.LatchPCR) {
		pcrs = append(pcrs, tpm.LatchPCR)
	}
	slices.Sort(pcrs)
	return pcrs
}

// TokenFromSealed is the talos-tpm2 UserData for a sealed object.
func TokenFromSealed(s *tpm.Sealed, slot int) TPMTokenData {
	ver := s.EncryptionVersion
	if ver == "" {
		ver = "1"
	}
	alg := s.Alg
	if alg == "" {
		alg = "sha256"
	}
	pub := s.PubKeyPCRs
	if len(pub) == 0 {
		pub = []int{11}
	}
	return TPMTokenData{
		KeySlots: []int{slot}, SealedBlobPrivate: s.Private, SealedBlobPublic: s.Public,
		PCRs: s.PCRs, PubKeyPCRs: pub, Alg: alg, EncryptionVersion: ver,
		PolicyHash: s.PolicyHash, KeyName: s.KeyName, PCRValues: s.PCRValues,
	}
}

// SealedFromToken turns talos-tpm2 UserData back into a tpm.Sealed. The
// token comes in two shapes (Talos changed the meaning of "pcrs"):
//   - encryption_version "1": pcrs are the hash-bound PCRs, pubkey_pcrs the
//     PCRs of the signed policy;
//   - no encryption_version (Talos before 1.12): pcrs names the PCR of the
//     signed policy ([11]) and the object is always also bound to PCR 7, so
//     the policy is PolicyAuthorize(signed pcrs) then PolicyPCR(7).
func SealedFromToken(ud TPMTokenData) *tpm.Sealed {
	s := &tpm.Sealed{
		Private: ud.SealedBlobPrivate, Public: ud.SealedBlobPublic, PCRs: ud.PCRs,
		PubKeyPCRs: ud.PubKeyPCRs, Alg: ud.Alg, PolicyHash: ud.PolicyHash,
		KeyName: ud.KeyName, EncryptionVersion: ud.EncryptionVersion,
	}
	if len(ud.PCRValues) == len(ud.PCRs) {
		s.PCRValues = ud.PCRValues
	}
	if s.EncryptionVersion == "" {
		s.PubKeyPCRs = slices.Clone(ud.PCRs)
		if len(s.PubKeyPCRs) == 0 {
			s.PubKeyPCRs = []int{tpm.UKIPCR}
		}
		s.PCRs = []int{tpm.SecureBootPCR}
		s.PCRValues = nil
	}
	return s
}

// onlySecureBootPCRChanged reports whether unsealErr, a PCR mismatch of s,
// is known to be PCR 7's alone: the TPM said which PCRs changed (the
// token's sealing values matched the object's policy) and it was PCR 7, or
// PCR 7 is s's only hash-bound PCR. A mismatch that may be PCR 15's (the
// latch: a planted STATE, volumes out of order) never causes a
// re-enrollment.
func onlySecureBootPCRChanged(s *tpm.Sealed, unsealErr error) bool {
	var changed *tpm.PCRChangedError
	if errors.As(unsealErr, &changed) {
		return slices.Equal(changed.Changed, []int{tpm.SecureBootPCR})
	}
	return len(s.PCRs) > 0 && !slices.ContainsFunc(s.PCRs, func(p int) bool { return p != tpm.SecureBootPCR })
}

// UnlatchedForeignToken reports whether a tpm key opens s through another
// tool's token (systemd-tpm2, clevis tpm2 pin, as Passphrase chooses it)
// whose policy does not bind PCR 15, the latch: such a slot still unseals
// after the latch (debug shell, running system). It returns the token's
// type and the PCRs its policy binds. Tokens a tpm key cannot open (tang,
// malformed) are not reported.
func UnlatchedForeignToken(s Slot) (typ string, pcrs []int, unlatched bool) {
	if TokenType(s.Token) == TokenTPM {
		return "", nil, false
	}
	for _, raw := range s.Assigned {
		switch TokenType(raw) {
		case TokenSystemdTPM:
			tok, err := tpm.ParseSystemdToken(raw)
			if err != nil {
				return "", nil, false
			}
			pcrs = append(slices.Clone(tok.PCRs), tok.PubKeyPCRs...)
		case TokenClevis:
			tok, err := tpm.ParseClevisToken(raw)
			if err != nil || tok.JWE.Header.Clevis.TPM2 == nil {
				return "", nil, false
			}
			if pcrs, err = tok.JWE.Header.Clevis.TPM2.BoundPCRs(); err != nil {
				return "", nil, false
			}
		default:
			continue
		}
		slices.Sort(pcrs)
		pcrs = slices.Compact(pcrs)
		return TokenType(raw), pcrs, !slices.Contains(pcrs, tpm.LatchPCR)
	}
	return "", nil, false
}

func (k *TPMKey) systemdPassphrase(ctx context.Context, s Slot, raw []byte) ([]byte, error) {
	st, ok := k.TPM.(SystemdTPM)
	if !ok || k.TPM == nil {
		return nil, fmt.Errorf("%w: slot %d has a systemd-tpm2 token and this TPM cannot unseal those", ErrKeyUnavailable, s.Slot)
	}
	tok, err := tpm.ParseSystemdToken(raw)
	if err != nil {
		// another tool's token: unusable here, never a reason to replace the slot
		return nil, fmt.Errorf("%w: %s slot %d: systemd-tpm2 token: %v", ErrKeyUnavailable, s.VolumeID, s.Slot, err)
	}
	if tok.PIN {
		return k.systemdPINPassphrase(ctx, s, tok)
	}
	pass, err := st.UnsealSystemd(ctx, tok)
	if err != nil {
		return nil, fmt.Errorf("%w: tpm unseal (systemd-tpm2): %w", ErrKeyUnavailable, err)
	}
	return pass, nil
}

func (k *TPMKey) clevisPassphrase(ctx context.Context, s Slot, raw []byte) ([]byte, error) {
	ct, ok := k.TPM.(ClevisTPM)
	if !ok || k.TPM == nil {
		return nil, fmt.Errorf("%w: %s slot %d has a clevis token and this TPM cannot unseal those", ErrKeyUnavailable, s.VolumeID, s.Slot)
	}
	tok, err := tpm.ParseClevisToken(raw)
	if err != nil {
		// clevis's token (a tang or sss pin, or one we cannot read): the
		// key is unavailable here, never a reason to replace the slot
		return nil, fmt.Errorf("%w: %s slot %d: %v", ErrKeyUnavailable, s.VolumeID, s.Slot, err)
	}
	pass, err := ct.UnsealClevis(ctx, tok)
	if err != nil {
		return nil, fmt.Errorf("%w: %s slot %d: tpm unseal (clevis): %w", ErrKeyUnavailable, s.VolumeID, s.Slot, err)
	}
	return pass, nil
}

// PINUnsealTimeout bounds the TPM's work on one typed PIN.
const PINUnsealTimeout = 30 * time.Second

// unsealContext is the context for one unseal after a PIN was typed: the
// key budget in ctx (the engine's per-key timeout) is for machines, not for
// a person who waited for the console and typed, so the unseal gets its own
// PINUnsealTimeout and keeps only ctx's cancellation, not its deadline.
func unsealContext(ctx context.Context) (context.Context, context.CancelFunc) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PINUnsealTimeout)
	cancelled := func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	}
	stop := context.AfterFunc(ctx, cancelled)
	cancelled() // AfterFunc on a done ctx runs later, in its own goroutine
	return uctx, func() { stop(); cancel() }
}

// systemdPINPassphrase asks for the TPM PIN of a systemd-tpm2 token and
// unseals with it, asking again after a wrong PIN up to PINTries times. An
// empty PIN is not sent to the TPM (it would count as a failure).
func (k *TPMKey) systemdPINPassphrase(ctx context.Context, s Slot, tok *tpm.SystemdToken) ([]byte, error) {
	st, ok := k.TPM.(SystemdPINTPM)
	if !ok {
		return nil, fmt.Errorf("%w: %s slot %d: systemd-tpm2 token needs a TPM PIN and this TPM cannot take one", ErrKeyUnavailable, s.VolumeID, s.Slot)
	}
	if k.PIN == nil {
		return nil, fmt.Errorf("%w: %s slot %d: systemd-tpm2 token needs a TPM PIN and there is no console to ask (use another key slot)", ErrKeyUnavailable, s.VolumeID, s.Slot)
	}
	var last error
	for try := 1; try <= PINTries; try++ {
		pin, err := k.PIN.TPMPIN(s.VolumeID, try, PINTries)
		if err != nil {
			return nil, fmt.Errorf("%w: %s slot %d: TPM PIN: %w", ErrKeyUnavailable, s.VolumeID, s.Slot, err)
		}
		if len(pin) == 0 {
			last = errors.New("no PIN typed")
			continue
		}
		uctx, cancel := unsealContext(ctx)
		pass, err := st.UnsealSystemdPIN(uctx, tok, pin)
		cancel()
		Zero(pin)
		if err == nil {
			return pass, nil
		}
		last = err
		if !errors.Is(err, tpm.ErrWrongPIN) {
			break
		}
	}
	return nil, fmt.Errorf("%w: %s slot %d: tpm unseal (systemd-tpm2 with PIN): %w", ErrKeyUnavailable, s.VolumeID, s.Slot, last)
}
