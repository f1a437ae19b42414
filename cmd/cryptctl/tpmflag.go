package main

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/pflag"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/keys"
)

// tpmFlags name the TPM and the signed PCR policy (the UKI's .pcrpkey and
// .pcrsig) that talos-tpm2 keys and signed systemd-tpm2 tokens need.
type tpmFlags struct {
	device       string
	uki          string
	pcrPublicKey string
	pcrSignature string
	allowPCR15   bool // seal new tpm slots while PCR 15 is not zero
}

// register adds the flags. deviceUsage says what happens without --tpm.
func (f *tpmFlags) register(fl *pflag.FlagSet, deviceUsage string) {
	fl.StringVar(&f.device, "tpm", "", "TPM: a device (/dev/tpmrm0, /dev/tpm0) or a software TPM's command port, swtpm:host=H,port=P; "+deviceUsage)
	fl.StringVar(&f.uki, "uki", "", "read the PCR public key and signatures from this UKI's .pcrpkey and .pcrsig sections")
	fl.StringVar(&f.pcrPublicKey, "pcr-public-key", tpm.StubPublicKeyPath, "PCR signing public key (PEM), when no --uki")
	fl.StringVar(&f.pcrSignature, "pcr-signature", tpm.StubSignaturePath, "PCR policy signatures (systemd .pcrsig JSON), when no --uki")
}

// open opens the TPM --tpm names (the default devices when empty).
func (f *tpmFlags) open() (transport.TPMCloser, error) {
	return tpm.OpenSpec(f.device)
}

// policy is where the signed PCR policy comes from; files are read when a
// key needs them, so a PCR-only systemd-tpm2 token needs none.
func (f *tpmFlags) policy() tpm.PolicySource {
	if f.uki != "" {
		return ukiPolicy(f.uki)
	}
	return tpm.FileSource{PublicKeyPath: f.pcrPublicKey, SignaturePath: f.pcrSignature}
}

// ukiPolicy reads the signed policy from a UKI's sections.
type ukiPolicy string

func (u ukiPolicy) PublicKey() (*rsa.PublicKey, error) {
	b, err := tpm.ReadUKISection(string(u), ".pcrpkey")
	if err != nil {
		return nil, fmt.Errorf("PCR public key: %w", err)
	}
	k, err := tpm.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s .pcrpkey: %w", u, err)
	}
	return k, nil
}

func (u ukiPolicy) Signatures() (tpm.Signatures, error) {
	b, err := tpm.ReadUKISection(string(u), ".pcrsig")
	if err != nil {
		return nil, fmt.Errorf("PCR signatures: %w", err)
	}
	s, err := tpm.ParseSignatures(trimNUL(b))
	if err != nil {
		return nil, fmt.Errorf("%s .pcrsig: %w", u, err)
	}
	return s, nil
}

// trimNUL drops the zero padding a PE section may carry after its JSON.
func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// volumeTPM opens the TPM --tpm names for a volume's tpm keys and puts it
// in env. The Secure Boot state checkSecurebootStatusOnEnroll asks for is
// read from this host's EFI variables only when --tpm is this host's TPM
// device; for a swtpm or any other TPM it is unknown, and such a key is not
// enrolled. New tpm slots are sealed only while PCR 15 is zero, unless
// --allow-pcr15 (pcr15Guard).
func volumeTPM(env *keys.Env, f *tpmFlags) (func(), error) {
	t, err := f.open()
	if err != nil {
		return nil, err
	}
	env.TPM = &pcr15Guard{Sealer: tpm.NewSealer(t, f.policy()), allow: f.allowPCR15}
	env.SecureBoot = unknownSecureBoot(f.device)
	if hostTPM(f.device) {
		env.SecureBoot = tpm.EFIVars{}
	}
	return func() { t.Close() }, nil
}

// hostTPM says whether spec names a TPM character device of this host,
// whose firmware's EFI variables are the ones cryptctl can read.
func hostTPM(spec string) bool {
	d, err := tpm.ParseDevice(spec)
	if err != nil || d.Path == "" {
		return false
	}
	st, err := os.Stat(d.Path)
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// unknownSecureBoot is the Secure Boot state of the machine behind a TPM
// that is not this host's: cryptctl cannot read it.
type unknownSecureBoot string

func (u unknownSecureBoot) SecureBootEnabled(context.Context) (bool, error) {
	return false, fmt.Errorf("unknown for --tpm %s, which is not this host's TPM device (cryptctl reads only this host's EFI variables): enroll this tpm key on that machine (its boot does, checking its own Secure Boot state), or drop checkSecurebootStatusOnEnroll", string(u))
}

// errPCR15 explains why a tpm slot is not sealed while PCR 15 is not zero.
var errPCR15 = errors.New("PCR 15 of this TPM is not zero: a tpm key sealed now is bound to its current value, but at boot PCR 15 is zero when STATE opens and holds STATE's latch for the volumes after it, so the slot could never unseal; let the boot enroll it, reset the TPM (reboot, or a fresh swtpm), or pass --allow-pcr15 if PCR 15 holds exactly what it will hold when this volume opens")

// pcr15Guard is a tpm.Sealer that refuses to seal while PCR 15 (the
// latch PCR every tpm key is bound to) is not zero, unless allow.
type pcr15Guard struct {
	*tpm.Sealer
	allow bool
}

// Seal implements keys.TPM.
func (g *pcr15Guard) Seal(ctx context.Context, secret []byte, pcrs []int) (*tpm.Sealed, error) {
	if !g.allow {
		v, err := tpm.ReadPCRs(g.Sealer.TPM, []int{tpm.LatchPCR})
		if err != nil {
			return nil, fmt.Errorf("read PCR %d: %w", tpm.LatchPCR, err)
		}
		for _, b := range v[0] {
			if b != 0 {
				return nil, errPCR15
			}
		}
	}
	return g.Sealer.Seal(ctx, secret, pcrs)
}
