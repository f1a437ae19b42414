package tpm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EncryptionVersion is written into new Sealed values (Talos's
// encryption_version): the blob is bound to Sealed.PCRs by hash and to a
// signed PCR 11 policy.
const EncryptionVersion = "1"

// errLoad marks a sealed object the TPM refused to load under the parent:
// a corrupt blob, or one sealed under another parent key.
var errLoad = errors.New("load sealed object (corrupt blob or other parent key)")

// maxSecret is the largest keyed-hash sensitive data a TPM accepts
// (MAX_SYM_DATA).
const maxSecret = 128

// Sealer seals and unseals secrets with one TPM, compatible with Talos's
// talos-tpm2 tokens. It implements unlock/keys' TPM interface.
type Sealer struct {
	// mu runs one seal or unseal at a time: each is a sequence of commands
	// holding transient objects, and a TPM has few object slots.
	mu sync.Mutex
	// TPM is the connection: the device (Open), the simulator or swtpm.
	TPM transport.TPM
	// Policy supplies the PCR signing key and signatures; StubSource() in
	// the initrd.
	Policy PolicySource
}

// NewSealer returns a Sealer on t that reads the signed policy from src.
func NewSealer(t transport.TPM, src PolicySource) *Sealer {
	return &Sealer{TPM: t, Policy: src}
}

// Seal seals secret to the TPM's SRK. The object's policy is
// PolicyAuthorize(PCR signing key) then PolicyPCR(pcrs) at their current
// values, computed offline; pcrs defaults to DefaultPCRs(). With LatchPCR
// (15) bound, the secret unseals only while PCR 15 holds what it holds now:
// seal at the volume's place in the boot sequence (zero before the first
// LatchVolumeKey; after STATE's latch for the volumes after STATE).
func (s *Sealer) Seal(ctx context.Context, secret []byte, pcrs []int) (*Sealed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(secret) == 0 || len(secret) > maxSecret {
		return nil, fmt.Errorf("seal: secret is %d bytes, want 1-%d", len(secret), maxSecret)
	}
	if len(pcrs) == 0 {
		pcrs = DefaultPCRs()
	}
	pcrs, err := normalizePCRs(pcrs)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	key, err := s.Policy.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkSHA256Bank(s.TPM, append(slices.Clone(pcrs), UKIPCR)); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	values, err := ReadPCRs(s.TPM, pcrs)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	for i, p := range pcrs {
		if err := checkPCRValue(p, values[i]); err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
	}
	policy, err := SealingPolicy(key, pcrs, values)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	srk, err := createPrimary(s.TPM, srkTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	defer flush(s.TPM, srk.handle)
	priv, pub, err := createSealedObject(s.TPM, srk, secret, policy, true)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &Sealed{
		Private:           priv,
		Public:            pub,
		PCRs:              pcrs,
		PubKeyPCRs:        []int{UKIPCR},
		Alg:               "sha256",
		PolicyHash:        policy,
		KeyName:           tpm2.Marshal(srk.name),
		EncryptionVersion: EncryptionVersion,
		PCRValues:         values,
	}, nil
}

// createSealedObject creates a keyed-hash object holding secret under
// parent with authPolicy policy and no user auth, over a salted session that
// encrypts the secret on its way in. It returns the marshalled TPM2B_PRIVATE
// and TPM2B_PUBLIC.
func createSealedObject(t transport.TPM, parent *primaryKey, secret, policy []byte, noDA bool) (priv, pub []byte, err error) {
	rsp, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: parent.handle,
			Name:   parent.name,
			Auth:   parent.session(tpm2.AESEncryption(128, tpm2.EncryptIn)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:    true,
				FixedParent: true,
				NoDA:        noDA,
			},
			AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
		}),
	}.Execute(t)
	if err != nil {
		return nil, nil, fmt.Errorf("create sealed object: %w", err)
	}
	return tpm2.Marshal(rsp.OutPrivate), tpm2.Marshal(rsp.OutPublic), nil
}

// Unseal recovers the secret of s. It fails with ErrSRKMismatch when the
// TPM's storage key is not the one s names (another TPM, a cleared TPM, or
// an interposer answering for it), checked before the key salts a session
// or loads the object; ErrNoSignature when no signature matches PCR 11
// (other UKI, or after leave-initrd); and ErrPCRMismatch when a hash-bound
// PCR changed (PCR 7: Secure Boot state; PCR 15: latched by another volume
// key than at sealing time).
func (s *Sealer) Unseal(ctx context.Context, sealed *Sealed) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sealed == nil {
		return nil, fmt.Errorf("unseal: no sealed data")
	}
	if sealed.Alg != "" && sealed.Alg != "sha256" {
		return nil, fmt.Errorf("unseal: PCR bank %q not supported (want sha256)", sealed.Alg)
	}
	pcrs := sealed.PCRs
	if len(pcrs) == 0 && sealed.EncryptionVersion == "" {
		pcrs = DefaultPCRs() // legacy tokens were bound to PCR 7 without saying so
	}
	pubKeyPCRs := sealed.PubKeyPCRs
	if len(pubKeyPCRs) == 0 {
		pubKeyPCRs = []int{UKIPCR}
	}
	key, err := s.Policy.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	sigs, err := s.Policy.Signatures()
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	srk, err := createPrimary(s.TPM, srkTemplate())
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	defer flush(s.TPM, srk.handle)
	if err := srk.pin(sealed.KeyName); err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	priv, pub, err := parseBlob(sealed.Private, sealed.Public)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	secret, err := unsealObject(ctx, s.TPM, unsealRequest{
		parent: srk, private: priv, public: pub,
		signingKey: key, sigs: sigs, pubKeyPCRs: pubKeyPCRs, pcrs: pcrs,
		sealedValues: sealed.PCRValues,
	})
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	return secret, nil
}

func parseBlob(privBytes, pubBytes []byte) (*tpm2.TPM2BPrivate, *tpm2.TPM2BPublic, error) {
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](privBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("bad sealed private blob: %w", err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pubBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("bad sealed public blob: %w", err)
	}
	return priv, pub, nil
}

// unsealRequest describes one sealed object and its policy.
type unsealRequest struct {
	parent     *primaryKey
	private    *tpm2.TPM2BPrivate
	public     *tpm2.TPM2BPublic
	signingKey *rsa.PublicKey // nil: PCR-only policy
	sigs       Signatures
	pubKeyPCRs []int // PCRs of the signed policy ([11])
	pcrs       []int // hash-bound PCRs
	// sealedValues are the token's PCR values at sealing (pcrs order), or
	// nil; trusted only when they reproduce the object's authPolicy.
	sealedValues [][]byte
	// authValue, when not nil, is the object's authValue (a systemd TPM
	// PIN): the policy ends with PolicyAuthValue and the unseal is
	// authorized with it.
	authValue []byte
}

// pcrChangedRetries bounds how often an unseal is restarted because some
// PCR was extended during its policy session (TPM_RC_PCR_CHANGED: the TPM
// rejects a session that saw the PCR update counter move, whichever PCR).
const pcrChangedRetries = 5

// unsealObject loads the object, satisfies its policy in a salted policy
// session — [PolicyPCR(pubKeyPCRs), VerifySignature, PolicyAuthorize] then
// PolicyPCR(pcrs) — and unseals it with response encryption. A concurrent
// extend of any PCR (boot measuring meanwhile) restarts the sequence.
func unsealObject(ctx context.Context, t transport.TPM, r unsealRequest) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		secret, err := unsealOnce(ctx, t, r)
		if err == nil || !errors.Is(err, tpm2.TPMRCPCRChanged) || attempt == pcrChangedRetries {
			return secret, err
		}
	}
}

func unsealOnce(ctx context.Context, t transport.TPM, r unsealRequest) ([]byte, error) {
	pcrs, err := normalizePCRs(r.pcrs)
	if err != nil {
		return nil, err
	}
	pubKeyPCRs, err := normalizePCRs(r.pubKeyPCRs)
	if err != nil {
		return nil, err
	}
	need := slices.Clone(pcrs)
	if r.signingKey != nil {
		need = append(need, pubKeyPCRs...)
	}
	if err := checkSHA256Bank(t, need); err != nil {
		return nil, err
	}
	if r.signingKey != nil {
		values, err := ReadPCRs(t, pubKeyPCRs)
		if err != nil {
			return nil, err
		}
		for i, p := range pubKeyPCRs {
			if err := checkPCRValue(p, values[i]); err != nil {
				return nil, err
			}
		}
	}
	values, err := ReadPCRs(t, pcrs)
	if err != nil {
		return nil, err
	}
	for i, p := range pcrs {
		if err := checkPCRValue(p, values[i]); err != nil {
			return nil, err
		}
	}
	objPub, err := r.public.Contents()
	if err != nil {
		return nil, fmt.Errorf("bad sealed public blob: %w", err)
	}

	load, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: r.parent.handle, Name: r.parent.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *r.private,
		InPublic:     *r.public,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLoad, err)
	}
	defer flush(t, load.ObjectHandle)

	// our own session, not tpm2.PolicySession: go-tpm v0.9.8 cuts a PIN's
	// authValue at its first zero byte (see saltedPolicySession)
	sess, closeSess, err := startSaltedPolicySession(t, r.parent, r.authValue)
	if err != nil {
		return nil, fmt.Errorf("start policy session: %w", err)
	}
	defer func() { _ = closeSess() }()

	if r.signingKey != nil {
		if err := authorizeSigned(t, sess.Handle(), r.signingKey, r.sigs, pubKeyPCRs); err != nil {
			return nil, err
		}
	}
	if len(pcrs) > 0 {
		sel, err := pcrSelection(pcrs)
		if err != nil {
			return nil, err
		}
		if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: sel}).Execute(t); err != nil {
			return nil, fmt.Errorf("policy PCR %v: %w", pcrs, err)
		}
	}
	if r.authValue != nil {
		if _, err := (tpm2.PolicyAuthValue{PolicySession: sess.Handle()}).Execute(t); err != nil {
			return nil, fmt.Errorf("policy auth value: %w", err)
		}
	}
	got, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("get policy digest: %w", err)
	}
	if !bytes.Equal(got.PolicyDigest.Buffer, objPub.AuthPolicy.Buffer) {
		if changed := changedPCRs(r, pcrs, values, objPub.AuthPolicy.Buffer); changed != nil {
			return nil, changed
		}
		return nil, fmt.Errorf("PCRs %v differ from sealing time%s (policy %x, object needs %x): %w",
			pcrs, pcrHints(pcrs), got.PolicyDigest.Buffer, objPub.AuthPolicy.Buffer, ErrPCRMismatch)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.authValue != nil {
		// The policy passed, so only the PIN can fail now: send it only
		// when a failure cannot lock the TPM out.
		if err := checkLockout(t); err != nil {
			return nil, err
		}
	}
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: load.ObjectHandle, Name: load.Name, Auth: sess},
	}.Execute(t, r.parent.session(tpm2.AESEncryption(128, tpm2.EncryptOut)))
	if err != nil {
		if r.authValue != nil && errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, fmt.Errorf("unseal object: %w", ErrWrongPIN)
		}
		if errors.Is(err, tpm2.TPMRCLockout) {
			return nil, fmt.Errorf("unseal object: %w: %w", ErrPINLockout, err)
		}
		return nil, fmt.Errorf("unseal object: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// checkLockout fails with ErrPINLockout when the TPM is in its
// dictionary-attack lockout or one more authorization failure would put it
// there (lockout counter + 1 >= maxAuthFail), so a mistyped PIN never locks
// the TPM for every DA-protected key on it.
func checkLockout(t transport.TPM) error {
	rsp, err := tpm2.GetCapability{
		Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTLockoutCounter), PropertyCount: 2,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("read the TPM's lockout counter: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return fmt.Errorf("read the TPM's lockout counter: %w", err)
	}
	var counter, limit uint32
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTLockoutCounter:
			counter = p.Value
		case tpm2.TPMPTMaxAuthFail:
			limit = p.Value
		}
	}
	if limit > 0 && counter+1 >= limit {
		return fmt.Errorf("%w (%d of %d failed authorizations; wait for the TPM's recovery time or use another key slot)", ErrPINLockout, counter, limit)
	}
	return nil
}

// authorizeSigned runs PolicyPCR(pubKeyPCRs) on session, finds the signature
// of the resulting digest, has the TPM verify it, and PolicyAuthorizes it.
func authorizeSigned(t transport.TPM, session tpm2.TPMHandle, key *rsa.PublicKey, sigs Signatures, pubKeyPCRs []int) error {
	ext, err := tpm2.LoadExternal{
		Hierarchy: tpm2.TPMRHOwner,
		InPublic:  tpm2.New2B(signingKeyPublic(key)),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("load PCR signing key: %w", err)
	}
	defer flush(t, ext.ObjectHandle)

	sel, err := pcrSelection(pubKeyPCRs)
	if err != nil {
		return err
	}
	if _, err := (tpm2.PolicyPCR{PolicySession: session, Pcrs: sel}).Execute(t); err != nil {
		return fmt.Errorf("policy PCR %v: %w", pubKeyPCRs, err)
	}
	dig, err := tpm2.PolicyGetDigest{PolicySession: session}.Execute(t)
	if err != nil {
		return fmt.Errorf("get policy digest: %w", err)
	}
	pol := dig.PolicyDigest.Buffer
	sig, ok := sigs.find(pol)
	if !ok {
		return fmt.Errorf("policy %x for PCRs %v (%d signatures available): %w",
			pol, pubKeyPCRs, len(sigs["sha256"]), ErrNoSignature)
	}
	if fp := Fingerprint(key); sig.PKFP != fp {
		return fmt.Errorf("signature for policy %x was made with key %s, not the PCR public key %s", pol, sig.PKFP, fp)
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Sig)
	if err != nil {
		return fmt.Errorf("signature for policy %s: bad base64: %w", hex.EncodeToString(pol), err)
	}
	sum := sha256.Sum256(pol)
	ver, err := tpm2.VerifySignature{
		KeyHandle: ext.ObjectHandle,
		Digest:    tpm2.TPM2BDigest{Buffer: sum[:]},
		Signature: tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgRSASSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{
				Hash: tpm2.TPMAlgSHA256,
				Sig:  tpm2.TPM2BPublicKeyRSA{Buffer: raw},
			}),
		},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("TPM rejected the signature of policy %x: %w", pol, err)
	}
	if _, err := (tpm2.PolicyAuthorize{
		PolicySession:  session,
		ApprovedPolicy: tpm2.TPM2BDigest{Buffer: pol},
		KeySign:        ext.Name,
		CheckTicket:    ver.Validation,
	}).Execute(t); err != nil {
		return fmt.Errorf("policy authorize: %w", err)
	}
	return nil
}

// pcrHints says what a change of the given bound PCRs usually means.
func pcrHints(pcrs []int) string {
	var h []string
	for _, p := range pcrs {
		switch p {
		case SecureBootPCR:
			h = append(h, "PCR 7: Secure Boot turned off or its keys changed")
		case LatchPCR:
			h = append(h, "PCR 15: another volume key was latched before this one (a planted or swapped STATE, or volumes opened out of order)")
		}
	}
	if len(h) == 0 {
		return ""
	}
	return " (" + strings.Join(h, "; ") + ")"
}

// changedPCRs says which hash-bound PCRs changed since sealing, or nil when
// that is unknown: r's sealed values must reproduce authPolicy (the loaded
// object's, which the TPM vouches for), else they are not the sealed ones.
func changedPCRs(r unsealRequest, pcrs []int, now [][]byte, authPolicy []byte) *PCRChangedError {
	if r.signingKey == nil || len(r.sealedValues) != len(pcrs) || len(now) != len(pcrs) {
		return nil
	}
	want, err := SealingPolicy(r.signingKey, pcrs, r.sealedValues)
	if err != nil || !bytes.Equal(want, authPolicy) {
		return nil
	}
	e := &PCRChangedError{}
	for i, p := range pcrs {
		if !bytes.Equal(r.sealedValues[i], now[i]) {
			e.Changed = append(e.Changed, p)
		}
	}
	if len(e.Changed) == 0 {
		return nil
	}
	return e
}
