package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

func newLuksTestTokenCmd() *cobra.Command {
	var tf tpmFlags
	var tokenID int
	cmd := &cobra.Command{
		Use:   "test-token DEVICE [--tpm DEV] [--token-id N] [--uki FILE | --pcr-public-key F --pcr-signature F]",
		Short: "Exit 0 only if a TPM token (systemd-tpm2, talos-tpm2, clevis tpm2) unseals and opens its key slot (exit 2 if none does)",
		Long: `Unseal each systemd-tpm2, talos-tpm2 and clevis (tpm2 pin) token of DEVICE with the TPM and try
its secret on the key slot the token names, as the boot would. Writes nothing,
to the volume or the TPM. For each token that fails it says why: no TPM, the
TPM's storage key (SRK) is not the one sealed to, a PIN is needed, or the bound
PCRs: their current values, the values at sealing when the token records them,
and whether the policy they make now matches the token's.
talos-tpm2 tokens (and signed systemd-tpm2 ones) also need the PCR 11 policy
signed for the running UKI: --uki, or --pcr-public-key and --pcr-signature
(default: where systemd-stub puts them in the initrd).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, h, err := luksReadHeader(cmd, args[0], false)
			if err != nil {
				return err
			}
			defer dev.Close()
			t, openErr := tf.open()
			if t != nil {
				defer t.Close()
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			results := testTokens(ctx, dev, h, t, openErr, tf.policy(), tokenID)
			ok := printTokenResults(cmd.OutOrStdout(), results)
			switch {
			case len(results) == 0 && tokenID >= 0:
				// bad input, not a key that fails
				return &exitError{code: exitFailure, err: fmt.Errorf("test-token %s: token %d does not exist (cryptsetup luksDump %s lists the tokens)", args[0], tokenID, args[0])}
			case len(results) == 0:
				return &exitError{code: exitNoKey, err: fmt.Errorf("test-token %s: no systemd-tpm2, talos-tpm2 or clevis token", args[0])}
			case !ok:
				return &exitError{code: exitNoKey, err: fmt.Errorf("test-token %s: no TPM token opens its key slot", args[0])}
			}
			return nil
		},
	}
	tf.register(cmd.Flags(), "default /dev/tpmrm0, then /dev/tpm0")
	cmd.Flags().IntVar(&tokenID, "token-id", -1, "only test this token")
	return cmd
}

// errPINRequired: a token needs a PIN, which test-token does not ask for.
var errPINRequired = errors.New("PIN required")

// tokenResult is what test-token found for one token.
type tokenResult struct {
	ID     int
	Type   string
	Slots  []int
	Opened int      // key slot the secret opened, -1 if none
	Err    error    // why it failed
	Detail []string // PCR values and policy, on failure
}

// testTokens unseals the TPM tokens of h (only token only, if >= 0) with t
// and tries each secret on the key slots its token names. t nil means the
// TPM could not be opened (openErr says why). It writes nothing.
func testTokens(ctx context.Context, r io.ReaderAt, h *luks2.Header, t transport.TPM, openErr error, src tpm.PolicySource, only int) []tokenResult {
	var ids []int
	for id := range h.Tokens {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var sealer *tpm.Sealer
	if t != nil {
		sealer = tpm.NewSealer(t, src)
	}
	var out []tokenResult
	for _, id := range ids {
		tok := h.Tokens[id]
		if only >= 0 && id != only {
			continue
		}
		res := tokenResult{ID: id, Type: tok.Type, Opened: -1}
		switch tok.Type {
		case keys.TokenSystemdTPM:
			res.Slots, res.Err = testSystemdToken(ctx, r, h, sealer, openErr, tok, &res)
		case keys.TokenTPM:
			res.Slots, res.Err = testTalosToken(ctx, r, h, sealer, openErr, tok, &res)
		case keys.TokenClevis:
			res.Slots, res.Err = testClevisToken(ctx, r, h, sealer, openErr, tok, &res)
		default:
			if only < 0 {
				continue
			}
			res.Err = fmt.Errorf("token %d is %q, not a TPM token (systemd-tpm2, talos-tpm2, clevis)", id, tok.Type)
		}
		out = append(out, res)
	}
	return out
}

// trySlots tries pass on slots and records the first that opens.
func trySlots(r io.ReaderAt, h *luks2.Header, pass []byte, slots []int, res *tokenResult) error {
	var errs []error
	for _, s := range slots {
		vk, used, err := h.Unlock(r, pass, s)
		if err == nil {
			clear(vk)
			res.Opened = used
			return nil
		}
		errs = append(errs, fmt.Errorf("key slot %d: %w", s, err))
	}
	if len(slots) == 0 {
		return errors.New("the token names no key slot")
	}
	return fmt.Errorf("the TPM unsealed the secret, but it opens no key slot the token names (stale token?): %w", errors.Join(errs...))
}

func testTalosToken(ctx context.Context, r io.ReaderAt, h *luks2.Header, sealer *tpm.Sealer, openErr error, tok luks2.Token, res *tokenResult) ([]int, error) {
	var t struct {
		UserData keys.TPMTokenData `json:"UserData"`
	}
	if err := json.Unmarshal(tok.Raw, &t); err != nil {
		return nil, fmt.Errorf("talos-tpm2 token: %w", err)
	}
	// Talos finds the token by id == keyslot
	slots := []int{tok.ID}
	for _, s := range append(slices.Clone(tok.Keyslots), t.UserData.KeySlots...) {
		if !slices.Contains(slots, s) {
			slots = append(slots, s)
		}
	}
	if sealer == nil {
		return slots, noTPM(openErr)
	}
	key := &keys.TPMKey{TPM: sealer}
	pass, err := key.Passphrase(ctx, keys.Slot{Slot: tok.ID, Token: tok.Raw})
	if err != nil {
		s := keys.SealedFromToken(t.UserData)
		res.Detail = pcrDetail(sealer.TPM, s.PCRs, s.PCRValues, s.PolicyHash, sealer.Policy.PublicKey)
		return slots, err
	}
	defer clear(pass)
	return slots, trySlots(r, h, pass, slots, res)
}

func testSystemdToken(ctx context.Context, r io.ReaderAt, h *luks2.Header, sealer *tpm.Sealer, openErr error, tok luks2.Token, res *tokenResult) ([]int, error) {
	st, err := tpm.ParseSystemdToken(tok.Raw)
	if err != nil {
		return nil, err
	}
	slots := slices.Clone(tok.Keyslots)
	for _, s := range st.Keyslots {
		if n, err := strconv.Atoi(s); err == nil && !slices.Contains(slots, n) {
			slots = append(slots, n)
		}
	}
	if st.PIN {
		return slots, fmt.Errorf("%w: the token was enrolled with --tpm2-with-pin; test it with the PIN at the boot prompt", errPINRequired)
	}
	if sealer == nil {
		return slots, noTPM(openErr)
	}
	pass, err := sealer.UnsealSystemd(ctx, st)
	if err != nil {
		policy, _ := hex.DecodeString(st.PolicyHash)
		var signer func() (*rsa.PublicKey, error)
		if st.PubKey != "" {
			signer = func() (*rsa.PublicKey, error) {
				pemKey, err := base64.StdEncoding.DecodeString(st.PubKey)
				if err != nil {
					return nil, fmt.Errorf("tpm2_pubkey: %w", err)
				}
				return tpm.ParsePublicKeyPEM(pemKey)
			}
		}
		res.Detail = pcrDetail(sealer.TPM, st.PCRs, nil, policy, signer)
		return slots, err
	}
	defer clear(pass)
	return slots, trySlots(r, h, pass, slots, res)
}

// testClevisToken unseals a clevis tpm2 pin's JWE (as clevis luks bind
// writes it) and tries the passphrase on the token's key slots, as the
// boot's clevisPassphrase does.
func testClevisToken(ctx context.Context, r io.ReaderAt, h *luks2.Header, sealer *tpm.Sealer, openErr error, tok luks2.Token, res *tokenResult) ([]int, error) {
	slots := slices.Clone(tok.Keyslots)
	ct, err := tpm.ParseClevisToken(tok.Raw)
	if err != nil {
		return slots, err
	}
	for _, s := range ct.Keyslots {
		if n, err := strconv.Atoi(s); err == nil && !slices.Contains(slots, n) {
			slots = append(slots, n)
		}
	}
	pin := ct.JWE.Header.Clevis
	if sealer == nil {
		return slots, noTPM(openErr)
	}
	pass, err := sealer.UnsealClevis(ctx, ct)
	if err != nil {
		if pin.TPM2 != nil {
			res.Detail = clevisPCRDetail(sealer.TPM, pin.TPM2)
		}
		return slots, err
	}
	defer clear(pass)
	return slots, trySlots(r, h, pass, slots, res)
}

// clevisAlgs are the hash names clevis's tpm2 pin takes for hash and
// pcr_bank.
var clevisAlgs = map[string]tpm2.TPMAlgID{
	"sha1": tpm2.TPMAlgSHA1, "sha256": tpm2.TPMAlgSHA256, "sha384": tpm2.TPMAlgSHA384, "sha512": tpm2.TPMAlgSHA512,
}

// clevisPCRDetail describes a clevis tpm2 pin's PCRs now, in the pin's
// bank (clevis records no values at sealing), and whether the policy they
// make now is the one the sealed object (jwk_pub) requires.
func clevisPCRDetail(t transport.TPM, cfg *tpm.ClevisTPM2) []string {
	if cfg.PCRIDs == "" {
		return []string{"bound to no PCR (clevis pcr_ids is empty)"}
	}
	bankName, hashName := cmp.Or(cfg.PCRBank, "sha1"), cmp.Or(cfg.Hash, "sha256") // clevis's defaults
	bank, okBank := clevisAlgs[bankName]
	nameAlg, okHash := clevisAlgs[hashName]
	if !okBank || !okHash {
		return []string{fmt.Sprintf("clevis pcr_bank %q, hash %q: not a hash cryptinit knows", bankName, hashName)}
	}
	var pcrs []int
	for _, f := range strings.Split(string(cfg.PCRIDs), ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 0 || p > 23 {
			return []string{fmt.Sprintf("clevis pcr_ids %q: %q is not a PCR", cfg.PCRIDs, f)}
		}
		if !slices.Contains(pcrs, p) {
			pcrs = append(pcrs, p)
		}
	}
	slices.Sort(pcrs)
	mask := make([]byte, 3)
	for _, p := range pcrs {
		mask[p/8] |= 1 << (p % 8)
	}
	var d []string
	var all []byte
	for _, p := range pcrs {
		one := make([]byte, 3)
		one[p/8] = 1 << (p % 8)
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: bank, PCRSelect: one}}}}.Execute(t)
		if err != nil || len(rsp.PCRValues.Digests) != 1 {
			return append(d, fmt.Sprintf("PCR %d (%s bank): cannot read it: %v", p, bankName, err))
		}
		v := rsp.PCRValues.Digests[0].Buffer
		d = append(d, fmt.Sprintf("PCR %d (%s bank): now %x", p, bankName, v))
		all = append(all, v...)
	}
	policy, err := func() ([]byte, error) {
		h, err := nameAlg.Hash()
		if err != nil {
			return nil, err
		}
		hh := h.New()
		hh.Write(all)
		calc, err := tpm2.NewPolicyCalculator(nameAlg)
		if err != nil {
			return nil, err
		}
		sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: bank, PCRSelect: mask}}}
		if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: hh.Sum(nil)}, Pcrs: sel}).Update(calc); err != nil {
			return nil, err
		}
		return calc.Hash().Digest, nil
	}()
	if err != nil {
		return append(d, fmt.Sprintf("policy: cannot compute it: %v", err))
	}
	var want []byte
	if raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(cfg.JWKPub, "=")); err == nil {
		if pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](raw); err == nil {
			if c, err := pub.Contents(); err == nil {
				want = c.AuthPolicy.Buffer
			}
		}
	}
	switch {
	case want == nil:
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x (jwk_pub does not parse)", policy))
	case bytes.Equal(policy, want):
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x, matches the token's", policy))
	default:
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x, token expects %x: POLICY MISMATCH (a bound PCR changed since clevis luks bind)", policy, want))
	}
	return d
}

func noTPM(openErr error) error {
	if openErr == nil {
		openErr = tpm.ErrNoTPM
	}
	return fmt.Errorf("no TPM: %w", openErr)
}

// pcrDetail describes the bound PCRs now and at sealing (sealed may be
// nil), and whether the policy the current values make is the token's;
// signer is the PCR signing key of a signed policy, nil for a PCR-only one.
func pcrDetail(t transport.TPM, pcrs []int, sealed [][]byte, want []byte, signer func() (*rsa.PublicKey, error)) []string {
	if len(pcrs) == 0 {
		return []string{"bound to no PCR by hash"}
	}
	now, err := tpm.ReadPCRs(t, pcrs)
	if err != nil {
		return []string{fmt.Sprintf("PCRs %v: cannot read them: %v", pcrs, err)}
	}
	var d []string
	for i, p := range pcrs {
		line := fmt.Sprintf("PCR %d: now %x", p, now[i])
		if len(sealed) == len(pcrs) {
			if string(sealed[i]) == string(now[i]) {
				line += ", as at sealing"
			} else {
				line += fmt.Sprintf(", at sealing %x: CHANGED", sealed[i])
			}
		}
		d = append(d, line)
	}
	var got []byte
	if signer != nil {
		key, kerr := signer()
		if kerr != nil {
			return append(d, fmt.Sprintf("policy: cannot compute it: %v", kerr))
		}
		got, err = tpm.SealingPolicy(key, pcrs, now)
	} else {
		got, err = tpm.PolicyPCRDigest(pcrs, now)
	}
	switch {
	case err != nil:
		d = append(d, fmt.Sprintf("policy: cannot compute it: %v", err))
	case len(want) == 0:
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x (the token records none)", got))
	case string(got) == string(want):
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x, matches the token's", got))
	default:
		d = append(d, fmt.Sprintf("policy with the current PCR values: %x, token expects %x: POLICY MISMATCH (a bound PCR changed since sealing)", got, want))
	}
	return d
}

// printTokenResults prints one line per token, and details for failures;
// it reports whether any token opened its key slot.
func printTokenResults(w io.Writer, results []tokenResult) bool {
	ok := false
	for _, r := range results {
		head := fmt.Sprintf("token %d (%s, key slots %v)", r.ID, r.Type, r.Slots)
		if r.Err == nil && r.Opened >= 0 {
			ok = true
			fmt.Fprintf(w, "%s: unsealed, opens key slot %d\n", head, r.Opened)
			continue
		}
		fmt.Fprintf(w, "%s: FAILED: %s: %v\n", head, tokenReason(r.Err), r.Err)
		for _, l := range r.Detail {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	return ok
}

// tokenReason names the cause of a failure in a few words.
func tokenReason(err error) string {
	var changed *tpm.PCRChangedError
	var pin *tpm.ClevisPinError
	switch {
	case errors.As(err, &pin):
		return "not supported: " + pin.Pin + " pin"
	case errors.Is(err, tpm.ErrNoTPM):
		return "no TPM"
	case errors.Is(err, tpm.ErrSRKMismatch), errors.Is(err, tpm.ErrDifferentTPM):
		return "wrong SRK (another TPM, or the TPM was cleared)"
	case errors.As(err, &changed):
		return fmt.Sprintf("PCR %s changed", joinInts(changed.Changed))
	case errors.Is(err, tpm.ErrPCRMismatch):
		return "policy mismatch"
	case errors.Is(err, tpm.ErrNoSignature):
		return "no PCR signature for the current PCR 11"
	case errors.Is(err, errPINRequired):
		return "PIN required"
	case errors.Is(err, luks2.ErrNoKeyslotOpens):
		return "wrong key"
	}
	return "error"
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
