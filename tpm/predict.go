package tpm

import (
	"crypto/sha256"
	"debug/pe"
	"fmt"
	"io"
)

// stub252Sections are the UKI sections systemd-stub 252 (Debian 12) knows,
// in the order it measures them into PCR 11 — the order of its section enum,
// not of the file. .pcrsig is known but never measured (it signs the result).
// Later stubs add .ucode, .uname, .sbat, .profile, .dtbauto, .hwids; 252
// ignores them, so they do not change PCR 11 under this stub.
var stub252Sections = [...]string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// Stub252Sections returns the measured sections in measurement order.
func Stub252Sections() []string { return append([]string(nil), stub252Sections[:]...) }

// Event is one PCR extend: its SHA-256 digest and what it stands for.
type Event struct {
	PCR         int
	Description string
	Digest      []byte
}

// UKIEvents returns the PCR 11 extends systemd-stub 252 makes for the UKI in
// r: for each present, non-empty measured section, SHA-256 of its name with
// the NUL terminator, then SHA-256 of its in-memory content (VirtualSize
// bytes: raw data, zero-filled past SizeOfRawData).
func UKIEvents(r io.ReaderAt) ([]Event, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("read UKI PE: %w", err)
	}
	defer f.Close()
	var events []Event
	for _, name := range stub252Sections {
		s := f.Section(name)
		if s == nil || s.VirtualSize == 0 {
			continue
		}
		dataDigest, err := sectionDigest(s)
		if err != nil {
			return nil, err
		}
		nameDigest := sha256.Sum256(append([]byte(name), 0))
		events = append(events,
			Event{PCR: UKIPCR, Description: "section name " + name, Digest: nameDigest[:]},
			Event{PCR: UKIPCR, Description: fmt.Sprintf("section %s (%d bytes)", name, s.VirtualSize), Digest: dataDigest},
		)
	}
	if len(events) == 0 || f.Section(".linux") == nil {
		return nil, fmt.Errorf("read UKI PE: no .linux section: not a UKI")
	}
	return events, nil
}

// maxSection bounds a section's in-memory size, so a corrupt header cannot
// make us read or allocate without limit.
const maxSection = 1 << 30

// sectionDigest is SHA-256 of the section as loaded in memory: VirtualSize
// bytes, streamed.
func sectionDigest(s *pe.Section) ([]byte, error) {
	if s.VirtualSize > maxSection {
		return nil, fmt.Errorf("UKI section %s: size %d over %d", s.Name, s.VirtualSize, maxSection)
	}
	h := sha256.New()
	n := int64(min(s.VirtualSize, s.Size))
	if m, err := io.Copy(h, io.NewSectionReader(s, 0, n)); err != nil || m != n {
		return nil, fmt.Errorf("read UKI section %s: %d of %d bytes: %v", s.Name, m, n, err)
	}
	if _, err := io.CopyN(h, zeroReader{}, int64(s.VirtualSize)-n); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sectionContent is the section as loaded in memory: VirtualSize bytes.
func sectionContent(s *pe.Section) ([]byte, error) {
	if s.VirtualSize > maxSection {
		return nil, fmt.Errorf("UKI section %s: size %d over %d", s.Name, s.VirtualSize, maxSection)
	}
	data := make([]byte, s.VirtualSize)
	n := min(s.VirtualSize, s.Size)
	if _, err := s.ReadAt(data[:n], 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read UKI section %s: %w", s.Name, err)
	}
	return data, nil
}

// PhaseEvents returns the PCR 11 extends of phases, in order.
func PhaseEvents(phases ...Phase) []Event {
	events := make([]Event, 0, len(phases))
	for _, p := range phases {
		events = append(events, Event{PCR: UKIPCR, Description: "phase " + string(p), Digest: PhaseDigest(p)})
	}
	return events
}

// Replay returns the SHA-256 PCR value after extending a zeroed PCR with
// events in order.
func Replay(events []Event) []byte {
	v := make([]byte, sha256.Size)
	for _, e := range events {
		v = ExtendDigest(v, e.Digest)
	}
	return v
}

// PredictPCR11 returns the PCR 11 value after systemd-stub 252 booted the UKI
// in r and the initrd measured phases (typically PhaseEnterInitrd), with the
// events that make it up.
func PredictPCR11(r io.ReaderAt, phases ...Phase) ([]byte, []Event, error) {
	events, err := UKIEvents(r)
	if err != nil {
		return nil, nil, err
	}
	events = append(events, PhaseEvents(phases...)...)
	return Replay(events), events, nil
}
