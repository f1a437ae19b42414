// Command tpmprobe runs in the VM tests' real root, after switch_root, and
// tries to unseal STATE's TPM key again, to prove that the initrd's measures
// close the TPM to the booted system: PCR 11 has moved past leave-initrd (so
// the UKI's own signed policy no longer matches), and PCR 15 holds the
// latched volume key (so even a policy signed for the later PCR 11 value
// fails when the key is bound to PCR 15).
//
// It reads the talos-tpm2 token of the partition named STATE, the PCR public
// key from /etc/tpmprobe/pcrpkey.pem, and tries each signature file
// /etc/tpmprobe/*.pcrsig.json (the UKI's .pcrsig as uki.pcrsig.json; others
// named after what they sign). It prints one CRYPTINIT-ROOT line per attempt
// with the reason of the refusal, or UNSEALED; never the secret. It also
// prints PCRs 7, 11 and 15 (public values) so tests can seal to this boot.
package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

const (
	prefix  = "CRYPTINIT-ROOT: "
	confDir = "/etc/tpmprobe"
)

func say(format string, args ...any) { fmt.Printf(prefix+format+"\n", args...) }

func main() {
	if err := run(); err != nil {
		say("tpmprobe: %v", err)
	}
}

func run() error {
	t, err := tpm.Open()
	if err != nil {
		return err
	}
	defer t.Close()
	values, err := tpm.ReadPCRs(t, []int{tpm.SecureBootPCR, tpm.UKIPCR, tpm.LatchPCR})
	if err != nil {
		return err
	}
	for i, p := range []int{tpm.SecureBootPCR, tpm.UKIPCR, tpm.LatchPCR} {
		say("pcr %d %x", p, values[i])
	}
	sigFiles, _ := filepath.Glob(filepath.Join(confDir, "*.pcrsig.json"))
	if len(sigFiles) == 0 {
		return nil
	}
	keyPEM, err := os.ReadFile(filepath.Join(confDir, "pcrpkey.pem"))
	if err != nil {
		return err
	}
	pub, err := tpm.ParsePublicKeyPEM(keyPEM)
	if err != nil {
		return err
	}
	sealed, err := stateSealed()
	if err != nil {
		return err
	}
	slices.Sort(sigFiles)
	for _, f := range sigFiles {
		name := strings.TrimSuffix(filepath.Base(f), ".pcrsig.json")
		what := "tpm unseal after switch_root"
		if name != "uki" {
			what += " with a " + name + " signature"
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		sigs, err := tpm.ParseSignatures(data)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		s := tpm.NewSealer(t, tpm.StaticSource{Key: pub, Sigs: sigs})
		secret, err := s.Unseal(context.Background(), sealed)
		if err == nil {
			say("%s: UNSEALED (%d bytes)", what, len(secret))
			clear(secret)
			continue
		}
		say("%s: refused (%s)", what, reason(t, pub, sealed, err))
	}
	return nil
}

// reason names the PCR that refused: PCR 11 when no signature matches its
// value; PCR 15 when the sealed policy would hold with PCR 15 still at zero
// (its value at sealing time, before the latch) and every other PCR as now.
func reason(t transport.TPM, pub *rsa.PublicKey, sealed *tpm.Sealed, err error) string {
	switch {
	case errors.Is(err, tpm.ErrNoSignature):
		return "PCR 11: no signed policy matches its value, the boot is past leave-initrd: " + err.Error()
	case errors.Is(err, tpm.ErrPCRMismatch):
		if latchedOnly(t, pub, sealed) {
			return "PCR 15: latched since sealing, PCR 7 unchanged: " + err.Error()
		}
		return fmt.Sprintf("PCRs %v differ from sealing time: %v", sealed.PCRs, err)
	}
	return "other: " + err.Error()
}

// latchedOnly reports whether the sealed policy matches the current PCR
// values with only PCR 15 reset to zero, and not the current values as they are.
func latchedOnly(t transport.TPM, pub *rsa.PublicKey, sealed *tpm.Sealed) bool {
	i := slices.Index(sealed.PCRs, tpm.LatchPCR)
	if i < 0 {
		return false
	}
	values, err := tpm.ReadPCRs(t, sealed.PCRs)
	if err != nil {
		return false
	}
	now, err := tpm.SealingPolicy(pub, sealed.PCRs, values)
	if err != nil || bytes.Equal(now, sealed.PolicyHash) {
		return false
	}
	values[i] = make([]byte, len(values[i]))
	zero, err := tpm.SealingPolicy(pub, sealed.PCRs, values)
	return err == nil && bytes.Equal(zero, sealed.PolicyHash)
}

// stateSealed reads the talos-tpm2 token of the partition named STATE.
func stateSealed() (*tpm.Sealed, error) {
	dev, err := partition("STATE")
	if err != nil {
		return nil, err
	}
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := luks2.ReadHeader(f)
	if err != nil {
		return nil, fmt.Errorf("STATE %s: %w", dev, err)
	}
	for _, tok := range h.Tokens {
		var t struct {
			Type     string          `json:"type"`
			UserData json.RawMessage `json:"UserData"`
		}
		if json.Unmarshal(tok.Raw, &t) != nil || t.Type != keys.TokenTPM {
			continue
		}
		var ud keys.TPMTokenData
		if err := json.Unmarshal(t.UserData, &ud); err != nil {
			return nil, fmt.Errorf("STATE token %d: %w", tok.ID, err)
		}
		return keys.SealedFromToken(ud), nil
	}
	return nil, fmt.Errorf("STATE %s has no %s token", dev, keys.TokenTPM)
}

// partition finds the device of the GPT partition named label.
func partition(label string) (string, error) {
	uevents, _ := filepath.Glob("/sys/class/block/*/uevent")
	for _, u := range uevents {
		b, err := os.ReadFile(u)
		if err != nil {
			continue
		}
		var name, part string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "DEVNAME="); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(l, "PARTNAME="); ok {
				part = v
			}
		}
		if part == label && name != "" {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("no partition named %s", label)
}
