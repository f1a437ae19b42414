package vm

import (
	"os"

	"github.com/cryptinit/cryptinit/images/uki"
)

// BuildUKI assembles a UKI with initrd and cmdline on systemd-stub, adds the
// signed PCR policy when the image build made a PCR key, and, when sign is
// set, signs it with the test db key, so a Secure Boot node boots a per-test
// image that TPM keys can still unseal under.
func (a *Artifacts) BuildUKI(initrd, cmdline, out string, sign bool) error {
	key, cert := a.DBKey, a.DBCert
	if !sign {
		key, cert = "", ""
	}
	var pcr *uki.PCRSigner
	if a.PCRKey != "" && a.Cryptctl != "" {
		pcr = &uki.PCRSigner{Cryptctl: a.Cryptctl, Key: a.PCRKey}
	}
	return uki.Build(uki.Spec{Linux: a.Kernel, Initrd: initrd, Cmdline: cmdline, OSRel: a.OSRelease}, key, cert, out, pcr)
}

// pcrSigning finds cryptctl and the PCR key the image build made, if any.
func (a *Artifacts) pcrSigning() {
	key, tool := a.Dir+"/keys/pcr-key.pem", a.Dir+"/bin/cryptctl"
	if _, err := os.Stat(tool); err != nil {
		return
	}
	a.Cryptctl = tool
	if _, err := os.Stat(key); err == nil {
		a.PCRKey = key
	}
}
