// Command mkuki assembles a signed Unified Kernel Image on systemd-stub
// (Debian 12 ships no ukify). It is run by images/build.sh.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cryptinit/cryptinit/images/uki"
)

func main() {
	var spec uki.Spec
	flag.StringVar(&spec.Stub, "stub", uki.DefaultStub, "systemd-stub EFI binary")
	flag.StringVar(&spec.Linux, "linux", "", "kernel image")
	flag.StringVar(&spec.Initrd, "initrd", "", "initramfs")
	flag.StringVar(&spec.Cmdline, "cmdline", "", "kernel command line")
	flag.StringVar(&spec.OSRel, "osrel", "", "os-release file")
	cryptctl := flag.String("cryptctl", "", "cryptctl binary to add the signed PCR policy with (optional)")
	pcrKey := flag.String("pcr-key", "", "PCR policy signing key for cryptctl pcr sign")
	key := flag.String("key", "", "db signing key (PEM); empty leaves the UKI unsigned")
	cert := flag.String("cert", "", "db certificate (PEM)")
	out := flag.String("o", "", "output UKI")
	flag.Parse()
	if spec.Linux == "" || spec.Initrd == "" || spec.OSRel == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	var pcr *uki.PCRSigner
	if *cryptctl != "" && *pcrKey != "" {
		pcr = &uki.PCRSigner{Cryptctl: *cryptctl, Key: *pcrKey}
	}
	if err := uki.Build(spec, *key, *cert, *out, pcr); err != nil {
		fmt.Fprintln(os.Stderr, "mkuki:", err)
		os.Exit(1)
	}
}
