package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/tpm"
)

// newPCRCmd groups PCR 11 prediction and UKI policy signing.
func newPCRCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pcr",
		Short: "Predict PCR 11 for a UKI and sign its TPM policy",
		Long: `Predict the PCR 11 value systemd-stub 252 produces for a UKI, and sign it
into the UKI's .pcrsig section so that TPM-sealed volume keys unseal under that
UKI, in the initrd only. Order of an image build: build the UKI, run
"cryptctl pcr sign" (adds .pcrpkey, then .pcrsig), then sign for Secure Boot.`,
	}
	cmd.AddCommand(newPCRGenkeyCmd(), newPCRPredictCmd(), newPCRSignCmd())
	return cmd
}

func newPCRGenkeyCmd() *cobra.Command {
	var out, pub string
	var force bool
	cmd := &cobra.Command{
		Use:   "genkey --out pcr-key.pem",
		Short: "Generate an RSA 2048 PCR signing key (PKCS#8 PEM, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("genkey: --out is required")
			}
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return fmt.Errorf("genkey: %w", err)
			}
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return fmt.Errorf("genkey: %w", err)
			}
			if err := pcrWriteFile(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600, force); err != nil {
				return fmt.Errorf("genkey: %w", err)
			}
			if pub != "" {
				p, err := tpm.MarshalPublicKeyPEM(&key.PublicKey)
				if err != nil {
					return fmt.Errorf("genkey: %w", err)
				}
				if err := pcrWriteFile(pub, p, 0o644, force); err != nil {
					return fmt.Errorf("genkey: %w", err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pkfp %s\n", tpm.Fingerprint(&key.PublicKey))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "private key file to create")
	cmd.Flags().StringVar(&pub, "pub", "", "also write the public key (PEM) here")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func newPCRPredictCmd() *cobra.Command {
	var uki string
	var phases []string
	var events bool
	cmd := &cobra.Command{
		Use:   "predict --uki FILE",
		Short: "Print the PCR 11 (sha256) value systemd-stub 252 produces for a UKI",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uki == "" {
				return errors.New("predict: --uki is required")
			}
			seqs, err := pcrParsePhases(phases)
			if err != nil {
				return fmt.Errorf("predict: %w", err)
			}
			f, err := os.Open(uki)
			if err != nil {
				return fmt.Errorf("predict: %w", err)
			}
			defer f.Close()
			w := cmd.OutOrStdout()
			for _, seq := range seqs {
				v, evs, err := tpm.PredictPCR11(f, seq...)
				if err != nil {
					return fmt.Errorf("predict %s: %w", uki, err)
				}
				if events {
					for _, e := range evs {
						fmt.Fprintf(w, "# %x %s\n", e.Digest, e.Description)
					}
				}
				fmt.Fprintf(w, "11:sha256=%x # phase %s\n", v, pcrJoinPhases(seq))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&uki, "uki", "", "UKI (PE) file")
	cmd.Flags().StringArrayVar(&phases, "phase", []string{string(tpm.PhaseEnterInitrd)},
		`phase sequence measured after the UKI, words joined by ":" (repeatable; "" for none)`)
	cmd.Flags().BoolVar(&events, "events", false, "also print every extend")
	return cmd
}

func newPCRSignCmd() *cobra.Command {
	var in, keyPath, out string
	var phases []string
	cmd := &cobra.Command{
		Use:   "sign --uki IN --key pcr-key.pem --out OUT",
		Short: "Add .pcrpkey and a signed PCR 11 policy (.pcrsig) to a UKI",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in == "" || keyPath == "" || out == "" {
				return errors.New("sign: --uki, --key and --out are required")
			}
			seqs, err := pcrParsePhases(phases)
			if err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			data, err := readKeyFile(cmd, "key", keyPath)
			if err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			key, err := tpm.ParsePrivateKeyPEM(data)
			clear(data)
			if err != nil {
				return fmt.Errorf("sign: %s: %w", keyPath, err)
			}
			sigs, err := tpm.SignUKI(cmd.Context(), in, out, key, seqs...)
			if err != nil {
				return err
			}
			for i, s := range sigs["sha256"] {
				fmt.Fprintf(cmd.OutOrStdout(), "signed PCR 11 policy %s for phase %s (pkfp %s)\n", s.Pol, pcrJoinPhases(seqs[i]), s.PKFP)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "uki", "", "unsigned UKI (without .pcrsig)")
	cmd.Flags().StringVar(&keyPath, "key", "", "PCR signing key (RSA PEM; - = stdin)")
	cmd.Flags().StringVar(&out, "out", "", "UKI to write")
	cmd.Flags().StringArrayVar(&phases, "phase", []string{string(tpm.PhaseEnterInitrd)},
		`phase sequence to sign for, words joined by ":" (repeatable)`)
	return cmd
}

// pcrParsePhases turns "enter-initrd:leave-initrd" strings into phase lists,
// as systemd-measure's --phase does.
func pcrParsePhases(in []string) ([][]tpm.Phase, error) {
	var out [][]tpm.Phase
	for _, s := range in {
		var seq []tpm.Phase
		for _, w := range strings.Split(s, ":") {
			if w == "" {
				continue
			}
			if strings.ContainsAny(w, " \t\n") {
				return nil, fmt.Errorf("phase %q: words must not contain spaces", s)
			}
			seq = append(seq, tpm.Phase(w))
		}
		out = append(out, seq)
	}
	if len(out) == 0 {
		return nil, errors.New("no phase given")
	}
	return out, nil
}

func pcrJoinPhases(seq []tpm.Phase) string {
	if len(seq) == 0 {
		return "(none)"
	}
	parts := make([]string, len(seq))
	for i, p := range seq {
		parts[i] = string(p)
	}
	return strings.Join(parts, ":")
}

// pcrWriteFile writes a new file with mode, refusing to overwrite unless force.
func pcrWriteFile(path string, data []byte, mode os.FileMode, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
