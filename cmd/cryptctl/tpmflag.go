package main

import (
	"crypto/rsa"
	"fmt"

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
// in env, with the host's EFI variables for checkSecurebootStatusOnEnroll.
func volumeTPM(env *keys.Env, f *tpmFlags) (func(), error) {
	t, err := f.open()
	if err != nil {
		return nil, err
	}
	env.TPM = tpm.NewSealer(t, f.policy())
	env.SecureBoot = tpm.EFIVars{}
	return func() { t.Close() }, nil
}
