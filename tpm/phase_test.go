package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

type bufLogger struct{ bytes.Buffer }

func (l *bufLogger) Printf(format string, args ...any) { fmt.Fprintf(&l.Buffer, format+"\n", args...) }

func TestMeasurerExtendsAndLogs(t *testing.T) {
	sim := openSimulator(t)
	var log bufLogger
	m := &Measurer{TPM: sim, Log: &log}
	volumeKey := []byte("0123456789abcdef0123456789abcdef")

	if err := m.MeasurePhase(PhaseEnterInitrd); err != nil {
		t.Fatal(err)
	}
	if err := m.MeasurePhase(PhaseLeaveInitrd); err != nil {
		t.Fatal(err)
	}
	if err := m.LatchVolumeKey("STATE", volumeKey); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPCRs(sim, []int{UKIPCR, LatchPCR})
	if err != nil {
		t.Fatal(err)
	}
	enter := sha256.Sum256([]byte("enter-initrd"))
	leave := sha256.Sum256([]byte("leave-initrd"))
	want11 := ExtendDigest(ExtendDigest(make([]byte, 32), enter[:]), leave[:])
	if !bytes.Equal(got[0], want11) {
		t.Errorf("PCR 11 = %x, want %x", got[0], want11)
	}
	if want15 := ExtendDigest(make([]byte, 32), LatchDigest("STATE", volumeKey)); !bytes.Equal(got[1], want15) {
		t.Errorf("PCR 15 = %x, want %x", got[1], want15)
	}
	out := log.String()
	for _, want := range []string{"enter-initrd", "leave-initrd", "STATE"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	keyHash := sha256.Sum256(volumeKey)
	for _, secret := range []string{string(volumeKey), hex.EncodeToString(volumeKey), hex.EncodeToString(keyHash[:])} {
		if strings.Contains(out, secret) {
			t.Errorf("log reveals the volume key (%q):\n%s", secret, out)
		}
	}
}

func TestLatchDigest(t *testing.T) {
	k := []byte("key")
	a := LatchDigest("STATE", k)
	if !bytes.Equal(a, LatchDigest("STATE", k)) {
		t.Fatal("LatchDigest not deterministic")
	}
	for _, other := range [][]byte{LatchDigest("EPHEMERAL", k), LatchDigest("STATE", []byte("kez")), LatchDigest("STATEk", []byte("ey"))} {
		if bytes.Equal(a, other) {
			t.Error("different volume or key gave the same latch digest")
		}
	}
	h := sha256.Sum256(k)
	if bytes.Equal(a, h[:]) {
		t.Error("latch digest is the bare key hash: not domain-separated")
	}
}

func TestOpenDeviceMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := OpenDevice(filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0"))
	if !errors.Is(err, ErrNoTPM) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNoTPM wrapping not-exist", err)
	}
}
