package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/cryptinit/cryptinit/images/imagebuild"
	"github.com/cryptinit/cryptinit/images/initramfs"
	"github.com/cryptinit/cryptinit/images/uki"
	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Build cryptinit boot images (initramfs, signed UKI)"}
	cmd.AddCommand(newImageBuildCmd(), newImageHostDevicesCmd())
	return cmd
}

func newImageBuildCmd() *cobra.Command {
	var o imagebuild.Options
	var host, universal bool
	var mods, omit []string
	cmd := &cobra.Command{
		Use:   "build -o FILE [--uki] [--host | --universal] [--modules a,b] ...",
		Short: "Build an initramfs, or with --uki a signed UKI, for a kernel and machine",
		Long: "Builds cryptinit's initramfs in-process: /init, the kernel modules chosen (always the\n" +
			"crypto and filesystem classes; --host adds the drivers of this machine's disks, NICs,\n" +
			"keyboards and CPU; --universal adds " + classNames(initramfs.Universal) + "; --modules\n" +
			"adds names) with their dependencies, mkfs.xfs, mkfs.ext4, /bin/sh, the machine config\n" +
			"and KMS certificates. With --uki it becomes a UKI on systemd-stub, its PCR 11 policy\n" +
			"signed with --pcr-key and the whole signed for Secure Boot with --sb-key/--sb-cert.\n" +
			"The same inputs give the same bytes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := &o.Initramfs
			if in.KernelVersion == "" {
				r, err := imagebuild.HostRelease()
				if err != nil {
					return err
				}
				in.KernelVersion = r
			}
			if in.ModulesDir == "" {
				in.ModulesDir = filepath.Join("/lib/modules", in.KernelVersion)
			}
			if in.Init == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("image: --init: %w", err)
				}
				in.Init = filepath.Join(filepath.Dir(exe), "cryptinit")
			}
			in.Classes = append([]initramfs.Class{}, initramfs.Base...)
			if universal {
				in.Classes = append(in.Classes, initramfs.Universal...)
			}
			if host {
				devs, err := initramfs.ReadHost("/sys")
				if err != nil {
					return err
				}
				l, err := modules.Open(in.ModulesDir, nil)
				if err != nil {
					return fmt.Errorf("image: --host: %w", err)
				}
				in.Classes = append(in.Classes, initramfs.HostClasses(initramfs.HostModules(l, devs))...)
			}
			if len(mods) > 0 {
				in.Classes = append(in.Classes, initramfs.Class{Name: "modules", Doc: "--modules", Modules: mods})
			}
			in.Omit = omit
			if !host && !universal && len(mods) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "image: WARNING: no --host, --universal or --modules: no disk, keyboard or network drivers, only those built into the kernel")
			}
			if l, err := modules.Open(in.ModulesDir, nil); err == nil {
				if err := initramfs.Select(l, in.Classes, omit).Missing("modules"); err != nil {
					return fmt.Errorf("image: --modules: %w", err)
				}
			}
			if o.Out == "" {
				return errors.New("image: -o FILE is required")
			}
			if env := os.Getenv("SOURCE_DATE_EPOCH"); env != "" && !cmd.Flags().Changed("source-date-epoch") {
				t, err := strconv.ParseInt(env, 10, 64)
				if err != nil {
					return fmt.Errorf("image: SOURCE_DATE_EPOCH=%q: want Unix seconds: %w", env, err)
				}
				o.SourceDateEpoch = t
			}
			return imagebuild.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Out, "output", "o", "", "file to write (initramfs, or the UKI with --uki)")
	f.StringVar(&o.Initramfs.KernelVersion, "kernel-version", "", "kernel release (default: the running kernel's, uname -r)")
	f.StringVar(&o.Initramfs.ModulesDir, "modules-dir", "", "module tree with depmod's tables (default /lib/modules/<kernel-version>)")
	f.StringVar(&o.Vmlinuz, "vmlinuz", "", "kernel image for the UKI (default /boot/vmlinuz-<kernel-version>)")
	f.StringVar(&o.Initramfs.Init, "init", "", "the cryptinit binary (default: cryptinit next to cryptctl)")
	f.BoolVar(&host, "host", false, "add the drivers this machine's block, network, input and crypto devices use (sysfs modaliases)")
	f.BoolVar(&universal, "universal", false, "add every driver class: "+classNames(initramfs.Universal))
	f.StringSliceVar(&mods, "modules", nil, "add these modules or aliases (comma-separated)")
	f.StringSliceVar(&omit, "omit-modules", nil, "leave these out (kept, with a note, when a shipped module depends on one)")
	f.StringVar(&o.Initramfs.Config, "config", "", "machine config to embed at /etc/cryptinit/config.yaml")
	f.StringVar(&o.Initramfs.KMSCA, "kms-ca", "", "KMS CA certificate to embed")
	f.StringVar(&o.Initramfs.KMSCert, "kms-cert", "", "KMS client certificate to embed")
	f.StringVar(&o.Initramfs.KMSKey, "kms-key", "", "KMS client key to embed")
	f.StringVar(&o.Initramfs.Compress, "compress", "zstd", "initramfs compression: zstd, xz or none")
	f.BoolVar(&o.UKI, "uki", false, "write a UKI (systemd-stub + kernel + initramfs + cmdline + os-release)")
	f.StringVar(&o.Cmdline, "cmdline", "", "kernel command line baked into the UKI")
	f.StringVar(&o.OSRelease, "osrel", "", "os-release file for the UKI's .osrel (default: a built-in one)")
	f.StringVar(&o.Stub, "stub", "", "systemd-stub (default "+uki.DefaultStub+")")
	f.StringVar(&o.PCRKey, "pcr-key", "", "RSA key (PEM) signing the PCR 11 policy (.pcrsig); without it tpm keys cannot unseal")
	f.StringVar(&o.SBKey, "sb-key", "", "Secure Boot db key (PEM) the UKI is signed with (osslsigncode)")
	f.StringVar(&o.SBCert, "sb-cert", "", "Secure Boot db certificate (PEM)")
	f.Int64Var(&o.SourceDateEpoch, "source-date-epoch", 0, "signing time written into the Secure Boot signature, Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	return cmd
}

func classNames(cs []initramfs.Class) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name+" ("+strings.Join(c.Modules, " ")+")")
	}
	return strings.Join(names, ", ")
}

func newImageHostDevicesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "host-devices",
		Short: "Print the sysfs modaliases --host reads, one \"<class> <modalias>\" per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			devs, err := initramfs.ReadHost("/sys")
			if err != nil {
				return err
			}
			return initramfs.WriteDevices(cmd.OutOrStdout(), devs)
		},
	}
}
