package luks2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os/exec"
	"testing"

	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

// memDev is an in-memory Device.
type memDev struct{ b []byte }

func (m *memDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, io.ErrShortWrite
	}
	return copy(m.b[off:], p), nil
}

func (m *memDev) Sync() error { return nil }

// seedHeaders returns the metadata areas (both copies) of real headers:
// ours, and cryptsetup's when it is installed.
func seedHeaders(f *testing.F) [][]byte {
	dev := &memDev{b: make([]byte, 17<<20)}
	if _, err := Format(dev, int64(len(dev.b)), []byte("seed"), FormatOptions{KDF: kdfPBKDF2, DigestIterations: 1000, Label: "seed"}); err != nil {
		f.Fatal(err)
	}
	if _, err := ImportToken(dev, 3, []byte(`{"type":"talos-tpm2","keyslots":["0"],"UserData":{"pcrs":[7]}}`), false); err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{append([]byte(nil), dev.b[:keyslotsAreaStart]...)}
	if luks2test.WantCryptsetup(f) {
		img := luks2test.NewImage(f, imageSize)
		if out, err := exec.Command("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
			"--pbkdf-force-iterations", "1000", "--key-file", luks2test.KeyFile(f, []byte("seed")), img).CombinedOutput(); err == nil {
			seeds = append(seeds, readFile(f, img)[:keyslotsAreaStart])
		} else {
			f.Logf("no cryptsetup seed: %s", out)
		}
	}
	return seeds
}

// fuzzDevice builds a device from a fuzzed binary header prefix and JSON
// text. With fix, the checksums are recomputed and a matching secondary copy
// is added, so the fuzzer gets past the checksum into JSON validation,
// copy selection and unlock; without it the bytes are the device as they are.
// (Small inputs keep the fuzzer's minimisation fast.)
func fuzzDevice(hdr, js []byte, fix bool) []byte {
	if !fix {
		return append(append([]byte(nil), hdr...), js...)
	}
	dev := make([]byte, 2*defaultMetadataSize)
	copy(dev[:binHeaderSize], hdr)
	copy(dev[binHeaderSize:defaultMetadataSize-1], js)
	copy(dev[defaultMetadataSize:], dev[:defaultMetadataSize])
	copy(dev[defaultMetadataSize:], magicSecondary)
	binary.BigEndian.PutUint64(dev[defaultMetadataSize+offHdrOffset:], defaultMetadataSize)
	for _, c := range [][]byte{dev[:defaultMetadataSize], dev[defaultMetadataSize:]} {
		clear(c[offCsum : offCsum+lenCsum])
		sum := sha256.Sum256(c)
		copy(c[offCsum:], sum[:])
	}
	return dev
}

// FuzzReadHeader: ReadHeader never panics on any device content, and what it
// accepts can be mapped and checked (or refused) without panicking.
func FuzzReadHeader(f *testing.F) {
	for _, s := range seedHeaders(f) {
		text := s[binHeaderSize:defaultMetadataSize]
		text = text[:bytes.IndexByte(text, 0)]
		if _, err := ReadHeader(bytes.NewReader(fuzzDevice(s[:512], text, true))); err != nil {
			f.Fatalf("seed does not reach past the checksums: %v", err)
		}
		f.Add(s[:512], text, true)
		f.Add(s[:512], text, false)
		f.Add(s[:binHeaderSize], text[:100], false)
	}
	f.Fuzz(func(t *testing.T, hdr, js []byte, fix bool) {
		h, err := ReadHeader(bytes.NewReader(fuzzDevice(hdr, js, fix)))
		if err != nil {
			return
		}
		h.Mapping()
		for _, d := range h.Digests {
			if d.Iterations > 100000 {
				return // a slow digest is legitimate, just not for fuzzing
			}
		}
		_ = h.VerifyVolumeKey(make([]byte, 32))
		for _, k := range h.Keyslots {
			if k.KDF.Iterations > 10000 || k.KDF.Memory > 1024 || k.KDF.Time > 2 {
				return // legitimate but too slow to fuzz
			}
		}
		dev := bytes.NewReader(fuzzDevice(hdr, js, fix))
		if key, _, err := h.Unlock(dev, []byte("seed"), AnySlot); err == nil && len(key) == 0 {
			t.Fatal("Unlock succeeded with an empty key")
		}
	})
}

// FuzzParseJSON checks the JSON metadata parser: no panic, and anything it
// accepts re-encodes to metadata that parses to the same thing.
func FuzzParseJSON(f *testing.F) {
	for _, s := range seedHeaders(f) {
		text := s[binHeaderSize:defaultMetadataSize]
		f.Add(text[:bytes.IndexByte(text, 0)])
	}
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"16744448"}}`))
	f.Fuzz(func(t *testing.T, text []byte) {
		m, exact, err := parseMetadata(text)
		if err != nil {
			return
		}
		enc, err := m.encode()
		if err != nil {
			t.Fatalf("accepted metadata does not encode: %v", err)
		}
		m2, exact2, err := parseMetadata(enc)
		if err != nil || !exact2 {
			t.Fatalf("re-encoded metadata does not parse back exactly: %v", err)
		}
		if exact {
			if same, _ := sameJSON(text, enc); !same {
				t.Fatalf("exact metadata changed on re-encoding")
			}
		}
		enc2, _ := m2.encode()
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable")
		}
	})
}
