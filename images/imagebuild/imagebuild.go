// Package imagebuild is `cryptctl image build`: from a kernel, a module
// selection, a machine config and the operator's keys to an initramfs or a
// signed UKI, in-process. It joins images/initramfs (the archive),
// images/uki (the PE sections, objcopy and osslsigncode) and tpm (the signed
// PCR 11 policy).
package imagebuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cryptinit/cryptinit/images/initramfs"
	"github.com/cryptinit/cryptinit/images/uki"
	"github.com/cryptinit/cryptinit/tpm"
	"golang.org/x/sys/unix"
)

// DefaultOSRelease is the UKI's .osrel when no file is given: boot menus
// (systemd-boot) show PRETTY_NAME.
const DefaultOSRelease = "NAME=\"cryptinit\"\nID=cryptinit\nPRETTY_NAME=\"cryptinit\"\n"

// Options are the inputs of one image.
type Options struct {
	Initramfs initramfs.Options
	Out       string // the file to write

	UKI       bool   // a UKI rather than a bare initramfs
	Vmlinuz   string // kernel image; /boot/vmlinuz-<release> when empty
	Cmdline   string
	OSRelease string // os-release file; DefaultOSRelease when empty
	Stub      string // systemd-stub; uki.DefaultStub when empty
	PCRKey    string // RSA PEM key signing the PCR 11 policy (.pcrsig); optional
	SBKey     string // Secure Boot db key (PEM); optional
	SBCert    string // and its certificate

	// SourceDateEpoch is the signing time, in Unix seconds, of the Secure
	// Boot signature: fixed, so a signed UKI is as reproducible as the rest.
	SourceDateEpoch int64
}

// HostRelease is the running kernel's release (uname -r).
func HostRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// Run builds the image of o, writes it to o.Out and tells log what went in.
func Run(ctx context.Context, o Options, log io.Writer) error {
	if o.Out == "" {
		return fmt.Errorf("image: no output file (-o)")
	}
	if (o.SBKey == "") != (o.SBCert == "") {
		return fmt.Errorf("image: --sb-key and --sb-cert go together")
	}
	if !o.UKI && (o.PCRKey != "" || o.SBKey != "") {
		return fmt.Errorf("image: --pcr-key and --sb-key sign a UKI: add --uki")
	}
	img, err := initramfs.Build(o.Initramfs)
	if err != nil {
		return err
	}
	initramfs.Report(log, img, o.Initramfs.Compress)
	if !o.UKI {
		return writeAtomic(o.Out, img.Data)
	}
	return buildUKI(ctx, o, img.Data, log)
}

func buildUKI(ctx context.Context, o Options, initrd []byte, log io.Writer) error {
	if o.Vmlinuz == "" {
		o.Vmlinuz = filepath.Join("/boot", "vmlinuz-"+o.Initramfs.KernelVersion)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(o.Out), ".image-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(tmp)
	spec := uki.Spec{Stub: o.Stub, Linux: o.Vmlinuz, Initrd: filepath.Join(tmp, "initrd"), Cmdline: o.Cmdline, OSRel: o.OSRelease,
		SigningTime: o.SourceDateEpoch}
	if err := os.WriteFile(spec.Initrd, initrd, 0o644); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if spec.OSRel == "" {
		spec.OSRel = filepath.Join(tmp, "os-release")
		if err := os.WriteFile(spec.OSRel, []byte(DefaultOSRelease), 0o644); err != nil {
			return fmt.Errorf("image: %w", err)
		}
	}
	var pcrSign func(in, out string) error
	if o.PCRKey != "" {
		data, err := os.ReadFile(o.PCRKey)
		if err != nil {
			return fmt.Errorf("image: PCR key: %w", err)
		}
		key, err := tpm.ParsePrivateKeyPEM(data)
		clear(data)
		if err != nil {
			return fmt.Errorf("image: PCR key %s: %w", o.PCRKey, err)
		}
		pcrSign = func(in, out string) error {
			_, err := tpm.SignUKI(ctx, in, out, key)
			return err
		}
	} else {
		fmt.Fprintln(log, "image: WARNING: no --pcr-key: the UKI has no .pcrpkey/.pcrsig, so tpm keys cannot unseal on it")
	}
	if o.SBKey == "" {
		fmt.Fprintln(log, "image: WARNING: no --sb-key/--sb-cert: the UKI is not signed and will not boot with Secure Boot on")
	}
	stage := filepath.Join(tmp, "uki.efi")
	if err := uki.BuildWith(spec, o.SBKey, o.SBCert, stage, pcrSign); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	b, err := os.ReadFile(stage)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	st, err := os.Stat(o.Vmlinuz)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	fmt.Fprintf(log, "image: UKI %s: %d bytes (kernel %d, initramfs %d, pcrsig %v, Secure Boot signed %v)\n",
		o.Out, len(b), st.Size(), len(initrd), pcrSign != nil, o.SBKey != "")
	return writeAtomic(o.Out, b)
}

// writeAtomic writes b to path through a temporary file in the same
// directory, so a failed build never leaves half an image behind, nor a
// crash a renamed but empty one (the file, then the directory, is synced).
// The image is mode 0600 whatever was there before: it may hold the KMS
// client key and the machine config.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".image-*")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("image: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("image: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("image: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("image: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
