package vm

import "github.com/cryptinit/cryptinit/images/uki"

// BuildUKI assembles a UKI with initrd and cmdline on systemd-stub and, when
// sign is set, signs it with the test db key, so a Secure Boot node boots a
// per-test image.
func (a *Artifacts) BuildUKI(initrd, cmdline, out string, sign bool) error {
	key, cert := a.DBKey, a.DBCert
	if !sign {
		key, cert = "", ""
	}
	return uki.Build(uki.Spec{Linux: a.Kernel, Initrd: initrd, Cmdline: cmdline, OSRel: a.OSRelease}, key, cert, out)
}
