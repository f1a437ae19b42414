package tpm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"debug/pe"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Objcopy is the objcopy binary used to add sections to a UKI (binutils).
const Objcopy = "objcopy"

// UKISection is a section to add to a UKI.
type UKISection struct {
	Name string
	Data []byte
}

// AddUKISections writes out: the PE image in plus sections, each placed at a
// fresh, aligned VMA after the image's last section so none overlap. It runs
// objcopy; in is left untouched.
func AddUKISections(ctx context.Context, in, out string, sections ...UKISection) error {
	f, err := pe.Open(in)
	if err != nil {
		return fmt.Errorf("add UKI sections to %s: %w", in, err)
	}
	var imageBase uint64
	var align uint32 = 0x1000
	switch h := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		imageBase, align = h.ImageBase, max(align, h.SectionAlignment)
	case *pe.OptionalHeader32:
		imageBase, align = uint64(h.ImageBase), max(align, h.SectionAlignment)
	}
	var end uint64
	for _, s := range f.Sections {
		for _, add := range sections {
			if s.Name == add.Name {
				f.Close()
				return fmt.Errorf("add UKI sections to %s: it already has a %s section", in, add.Name)
			}
		}
		end = max(end, uint64(s.VirtualAddress)+uint64(max(s.VirtualSize, s.Size)))
	}
	f.Close()

	tmp, err := os.MkdirTemp("", "cryptinit-uki-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var args []string
	for i, s := range sections {
		if len(s.Data) == 0 {
			return fmt.Errorf("add UKI section %s: empty", s.Name)
		}
		p := filepath.Join(tmp, fmt.Sprintf("section%d", i))
		if err := os.WriteFile(p, s.Data, 0o600); err != nil {
			return err
		}
		vma := alignUp(end, uint64(align))
		end = vma + uint64(len(s.Data))
		args = append(args,
			"--add-section", s.Name+"="+p,
			"--change-section-vma", fmt.Sprintf("%s=%#x", s.Name, imageBase+vma),
			"--set-section-flags", s.Name+"=data,readonly")
	}
	args = append(args, in, out)
	cmd := exec.CommandContext(ctx, Objcopy, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("objcopy %s -> %s: %w: %s", in, out, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// ReadUKISection returns the in-memory content of section name of the PE at
// path, or an error wrapping os.ErrNotExist when absent.
func ReadUKISection(path, name string) ([]byte, error) {
	f, err := pe.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(name)
	if s == nil {
		return nil, fmt.Errorf("%s has no %s section: %w", path, name, os.ErrNotExist)
	}
	return sectionContent(s)
}

// DefaultSignPhases are the phase sequences SignUKI signs for by default:
// only the initrd, so that nothing after leave-initrd can unseal.
func DefaultSignPhases() [][]Phase { return [][]Phase{{PhaseEnterInitrd}} }

// SignUKI writes out: the UKI in with a .pcrpkey section holding key's public
// half (added first, because systemd-stub measures it) and a .pcrsig section
// signing the predicted PCR 11 after each phase sequence (added last; the
// stub does not measure it). Sign the result for Secure Boot afterwards: the
// Authenticode signature does not touch PCR 11. If in already has a .pcrpkey
// it must be key's. It returns the signatures written.
func SignUKI(ctx context.Context, in, out string, key *rsa.PrivateKey, phases ...[]Phase) (Signatures, error) {
	if len(phases) == 0 {
		phases = DefaultSignPhases()
	}
	if _, err := ReadUKISection(in, ".pcrsig"); err == nil {
		return nil, fmt.Errorf("sign UKI %s: it already has a .pcrsig section; start from the unsigned UKI", in)
	}
	pubPEM, err := MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("sign UKI %s: %w", in, err)
	}
	tmp, err := os.MkdirTemp("", "cryptinit-sign-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	withKey := in
	existing, err := ReadUKISection(in, ".pcrpkey")
	switch {
	case err == nil:
		k, perr := ParsePublicKeyPEM(existing)
		if perr != nil || !k.Equal(&key.PublicKey) {
			return nil, fmt.Errorf("sign UKI %s: its .pcrpkey is not the public half of the signing key", in)
		}
	case errors.Is(err, os.ErrNotExist):
		withKey = filepath.Join(tmp, "with-pcrpkey.efi")
		if err := AddUKISections(ctx, in, withKey, UKISection{Name: ".pcrpkey", Data: pubPEM}); err != nil {
			return nil, fmt.Errorf("sign UKI %s: %w", in, err)
		}
	default:
		return nil, fmt.Errorf("sign UKI %s: %w", in, err)
	}

	sigs, err := signPredicted(withKey, key, phases)
	if err != nil {
		return nil, fmt.Errorf("sign UKI %s: %w", in, err)
	}
	js, err := sigs.Marshal()
	if err != nil {
		return nil, err
	}
	if err := AddUKISections(ctx, withKey, out, UKISection{Name: ".pcrsig", Data: js}); err != nil {
		return nil, fmt.Errorf("sign UKI %s: %w", in, err)
	}
	// Self-check: adding .pcrsig must not have changed what is measured.
	again, err := signPredictedDigests(out, phases)
	if err != nil {
		return nil, fmt.Errorf("sign UKI %s: recheck %s: %w", in, out, err)
	}
	for i, pol := range again {
		if sigs["sha256"][i].Pol != pol {
			return nil, fmt.Errorf("sign UKI %s: PCR 11 of %s changed when adding .pcrsig", in, out)
		}
	}
	return sigs, nil
}

// signPredicted signs PolicyPCR(11 = prediction) for each phase sequence.
func signPredicted(uki string, key *rsa.PrivateKey, phases [][]Phase) (Signatures, error) {
	f, err := os.Open(uki)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var list []PCRSignature
	for _, ph := range phases {
		v, _, err := PredictPCR11(f, ph...)
		if err != nil {
			return nil, err
		}
		sig, err := SignPolicy(key, []int{UKIPCR}, [][]byte{v})
		if err != nil {
			return nil, err
		}
		list = append(list, sig)
	}
	return Signatures{"sha256": list}, nil
}

// signPredictedDigests returns the hex policy digests signPredicted would sign.
func signPredictedDigests(uki string, phases [][]Phase) ([]string, error) {
	f, err := os.Open(uki)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	for _, ph := range phases {
		v, _, err := PredictPCR11(f, ph...)
		if err != nil {
			return nil, err
		}
		pol, err := PolicyPCRDigest([]int{UKIPCR}, [][]byte{v})
		if err != nil {
			return nil, err
		}
		out = append(out, fmt.Sprintf("%x", pol))
	}
	return out, nil
}
