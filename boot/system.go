package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/cryptinit/cryptinit/netboot"
	"github.com/cryptinit/cryptinit/netboot/kms"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// Files in the image that configure the KMS client (all optional).
const (
	KMSCAFile         = "/etc/cryptinit/kms-ca.pem"
	KMSClientCertFile = "/etc/cryptinit/kms-client.pem"
	KMSClientKeyFile  = "/etc/cryptinit/kms-client-key.pem"
)

// tpmMeasurer adapts tpm.Measurer to Measurer.
type tpmMeasurer struct{ m *tpm.Measurer }

func (t tpmMeasurer) MeasurePhase(p string) error { return t.m.MeasurePhase(tpm.Phase(p)) }
func (t tpmMeasurer) LatchVolumeKey(id string, key []byte) error {
	return t.m.LatchVolumeKey(id, key)
}

// netbootNetwork adapts netboot.Up to Network, with the ip= arguments of
// the kernel command line.
type netbootNetwork struct {
	cmdline string
	log     *console.Logger
}

func (n netbootNetwork) Up(ctx context.Context) (func() error, error) {
	ips, err := netboot.ParseCmdline(n.cmdline)
	if err != nil {
		return nil, err
	}
	s, err := netboot.Up(ctx, netboot.Config{IP: ips, Logf: func(f string, a ...any) { n.log.Printf("network: "+f, a...) }})
	if err != nil {
		return nil, err
	}
	r := s.Record()
	var addrs []string
	for _, i := range r.Interfaces {
		addrs = append(addrs, fmt.Sprintf("%s %s (%s)", i.Name, i.Addr, i.Method))
	}
	n.log.Printf("network: up in %s: %s", r.Took, strings.Join(addrs, "; "))
	return s.Down, nil
}

// kmsClient makes the KMS client from the files shipped in the image.
func kmsClient(log *console.Logger) *kms.Client {
	opts := kms.Options{Logf: func(f string, a ...any) { log.Printf("kms: "+f, a...) }}
	if _, err := os.Stat(KMSCAFile); err == nil {
		pool, err := kms.LoadCAs(KMSCAFile)
		if err != nil {
			log.Printf("kms: %s: %v", KMSCAFile, err)
		} else {
			opts.RootCAs, opts.RootCAsFrom = pool, KMSCAFile
		}
	}
	opts.CertificatesFrom = KMSClientCertFile // named in certificate errors
	if _, err := os.Stat(KMSClientCertFile); err == nil {
		c, err := kms.LoadClientCert(KMSClientCertFile, KMSClientKeyFile)
		if err != nil {
			log.Printf("kms: client certificate: %v", err)
		} else {
			opts.Certificates = append(opts.Certificates, c)
		}
	}
	return kms.New(opts)
}

// openTPM opens the TPM for measurements and sealing; nil when there is none.
func openTPM(log *console.Logger) (*tpm.Measurer, *tpm.Sealer) {
	t, err := tpm.Open()
	if err != nil {
		if errors.Is(err, tpm.ErrNoTPM) {
			log.Printf("tpm: no TPM 2.0 device: PCR measurements skipped, tpm keys unavailable")
		} else {
			log.Printf("tpm: %v: PCR measurements skipped, tpm keys unavailable", err)
		}
		return nil, nil
	}
	return &tpm.Measurer{TPM: t, Log: log}, tpm.NewSealer(t, tpm.StubSource())
}

// openModules opens the module tables shipped for the running kernel; nil
// when the image ships none.
func openModules(log *console.Logger) ModuleLoader {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		log.Printf("modules: %v", err)
		return nil
	}
	release := unix.ByteSliceToString(u.Release[:])
	dir := filepath.Join("/lib/modules", release)
	if _, err := os.Stat(filepath.Join(dir, "modules.dep")); errors.Is(err, os.ErrNotExist) {
		log.Printf("modules: none shipped for kernel %s", release)
		return nil
	}
	prober, err := kmodule.NewProber(kmodule.ProbeOpts{KVer: release})
	if err != nil {
		log.Printf("modules: %v", err)
		return nil
	}
	l, err := modules.Open(dir, prober)
	if err != nil {
		log.Printf("modules: %v", err)
		return nil
	}
	return l
}
