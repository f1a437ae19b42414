// Package uki assembles a Unified Kernel Image: systemd-stub with the kernel,
// initramfs, command line and os-release added as PE sections, then signs it for
// Secure Boot (osslsigncode, with a fixed signing time so the same inputs
// give the same bytes). Debian 12 has no ukify, so the sections are placed with objcopy
// at addresses computed here, leaving room for .pcrpkey and .pcrsig.
package uki

import (
	"debug/pe"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultStub is systemd-stub as shipped by Debian's systemd-boot-efi.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// Spec names the inputs of one UKI. Files are paths; Cmdline is the text itself.
type Spec struct {
	Stub    string // systemd-stub; DefaultStub when empty
	Linux   string // kernel image (bzImage)
	Initrd  string // initramfs, compressed or not
	Cmdline string // kernel command line
	OSRel   string // os-release file
	PCRKey  string // optional: PEM public key of the PCR 11 policy signer (.pcrpkey)
	PCRSig  string // optional: signed PCR policy JSON (.pcrsig)

	// SigningTime is the Authenticode signingTime, in Unix seconds, written
	// into the Secure Boot signature (SOURCE_DATE_EPOCH; 0 is 1970-01-01).
	// A fixed value keeps signed UKIs reproducible; the firmware ignores it.
	SigningTime int64
}

// pageAlign is the section placement granularity (the stub's own alignment is 512 bytes).
const pageAlign = 4096

// Section is one added section with its virtual address.
type Section struct {
	Name string
	File string
	VMA  uint64
	Size int64
}

// Layout places the sections of spec after the stub's last section, in ukify's
// order (.osrel .cmdline .pcrpkey .pcrsig .initrd .linux), without overlap.
// Reserved room is kept for .pcrpkey and .pcrsig even when they are absent so
// that signing later does not move .initrd and .linux.
func Layout(spec Spec, cmdlineFile string) ([]Section, error) {
	stub := spec.Stub
	if stub == "" {
		stub = DefaultStub
	}
	f, err := pe.Open(stub)
	if err != nil {
		return nil, fmt.Errorf("uki: open stub %s: %w", stub, err)
	}
	defer f.Close()
	var end uint64
	for _, s := range f.Sections {
		if e := uint64(s.VirtualAddress) + uint64(max(s.VirtualSize, s.Size)); e > end {
			end = e
		}
	}
	if oh, ok := f.OptionalHeader.(*pe.OptionalHeader64); ok {
		end += oh.ImageBase
	}
	type part struct {
		name, file string
		room       int64 // minimum room to reserve, for sections added later
	}
	parts := []part{
		{".osrel", spec.OSRel, 0},
		{".cmdline", cmdlineFile, 0},
		{".pcrpkey", spec.PCRKey, 16 << 10},
		{".pcrsig", spec.PCRSig, 64 << 10},
		{".initrd", spec.Initrd, 0},
		{".linux", spec.Linux, 0},
	}
	addr := alignUp(end, pageAlign)
	var out []Section
	for _, p := range parts {
		size := int64(0)
		if p.file != "" {
			st, err := os.Stat(p.file)
			if err != nil {
				return nil, fmt.Errorf("uki: section %s: %w", p.name, err)
			}
			size = st.Size()
			out = append(out, Section{Name: p.name, File: p.file, VMA: addr, Size: size})
		} else if p.room == 0 {
			return nil, fmt.Errorf("uki: section %s: no file given", p.name)
		}
		addr = alignUp(addr+uint64(max(size, p.room)), pageAlign)
	}
	return out, nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// Assemble writes the unsigned UKI for spec to out.
func Assemble(spec Spec, out string) error {
	if spec.Stub == "" {
		spec.Stub = DefaultStub
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".uki-")
	if err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmdline := filepath.Join(tmp, "cmdline")
	if err := os.WriteFile(cmdline, []byte(strings.TrimSpace(spec.Cmdline)+"\x00"), 0o644); err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	secs, err := Layout(spec, cmdline)
	if err != nil {
		return err
	}
	args := []string{}
	for _, s := range secs {
		args = append(args,
			"--add-section", s.Name+"="+s.File,
			"--change-section-vma", fmt.Sprintf("%s=0x%x", s.Name, s.VMA))
	}
	args = append(args, spec.Stub, out)
	if b, err := exec.Command("objcopy", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("uki: objcopy: %w: %s", err, b)
	}
	return nil
}

// Sign signs in for Secure Boot with the db key and certificate, writing out.
// It uses osslsigncode rather than sbsign because sbsign always writes the
// current time into the signature, so two signings of the same file differ;
// osslsigncode (2.5 in Debian 12 and later) takes the signing time as
// -time. The signature is otherwise the same kind sbsign makes: PKCS#7
// SignedData over the SHA-256 Authenticode digest, with no timestamp server.
// osslsigncode refuses to overwrite a file, so it writes beside out first.
func Sign(in, key, cert, out string, signingTime int64) error {
	tmp := out + ".signing"
	os.Remove(tmp)
	defer os.Remove(tmp)
	cmd := exec.Command("osslsigncode", "sign", "-certs", cert, "-key", key, "-h", "sha256",
		"-time", strconv.FormatInt(signingTime, 10), "-in", in, "-out", tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("uki: osslsigncode sign %s: %w: %s", in, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	return nil
}

// PCRSigner adds .pcrpkey and a signed PCR 11 policy (.pcrsig) to a UKI by
// running `cryptctl pcr sign` (the tpm package's tool), between assembly and
// Secure Boot signing: the Authenticode signature must cover both sections.
type PCRSigner struct {
	Cryptctl string // path of the cryptctl binary
	Key      string // PCR signing key (RSA PEM)
}

// Sign runs cryptctl pcr sign on in, writing out.
func (p *PCRSigner) Sign(in, out string) error {
	cmd := exec.Command(p.Cryptctl, "pcr", "sign", "--uki", in, "--key", p.Key, "--out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("uki: cryptctl pcr sign %s: %w: %s", in, err, b)
	}
	return nil
}

// Build assembles spec, adds the PCR policy signature when pcr is not nil,
// and signs the result with the db key and certificate into out. With an
// empty key the UKI is left without an Authenticode signature.
func Build(spec Spec, key, cert, out string, pcr *PCRSigner) error {
	var sign func(in, out string) error
	if pcr != nil {
		sign = pcr.Sign
	}
	return BuildWith(spec, key, cert, out, sign)
}

// BuildWith is Build with the PCR policy signing step given as a function
// (cryptctl image build signs in-process with the tpm package); nil leaves
// the UKI without .pcrpkey and .pcrsig.
func BuildWith(spec Spec, key, cert, out string, pcrSign func(in, out string) error) error {
	stage := out + ".assembled"
	if err := Assemble(spec, stage); err != nil {
		return err
	}
	defer os.Remove(stage)
	if pcrSign != nil {
		withPCR := out + ".pcr"
		if err := pcrSign(stage, withPCR); err != nil {
			return err
		}
		defer os.Remove(withPCR)
		stage = withPCR
	}
	if err := ClearTimestamp(stage); err != nil {
		return err
	}
	if key == "" {
		return os.Rename(stage, out)
	}
	return Sign(stage, key, cert, out, spec.SigningTime)
}

// ClearTimestamp zeroes the PE header's TimeDateStamp, which objcopy sets
// to the time of the build, and recomputes the header checksum, so that
// the same inputs give the same UKI. Neither field is measured into PCR 11
// nor covered by the Authenticode hash's sections.
func ClearTimestamp(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	if len(b) < 0x40 {
		return fmt.Errorf("uki: %s: not a PE file", path)
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	sum := pe + 4 + 20 + 64 // CheckSum in the optional header
	if pe+4+20+68 > len(b) || string(b[pe:pe+4]) != "PE\x00\x00" {
		return fmt.Errorf("uki: %s: not a PE file", path)
	}
	binary.LittleEndian.PutUint32(b[pe+8:], 0) // TimeDateStamp
	binary.LittleEndian.PutUint32(b[sum:], peChecksum(b, sum))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("uki: %w", err)
	}
	return nil
}

// peChecksum is the PE image checksum: the 16-bit one's complement sum of
// the file with the CheckSum field (at off) taken as zero, plus its length.
func peChecksum(b []byte, off int) uint32 {
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		var w uint64
		if i+1 < len(b) {
			w = uint64(binary.LittleEndian.Uint16(b[i:]))
		} else {
			w = uint64(b[i])
		}
		if i >= off && i < off+4 {
			w = 0
		}
		sum += w
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(b))
}
