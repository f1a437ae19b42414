package tpm

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestDeviceInitrdFlow runs the initrd's TPM sequence on the real TPM of the
// machine it runs on: meant for a VM booted from a signed UKI (the test
// binary, built with `go test -c`, runs inside the initramfs). It is skipped
// unless CRYPTINIT_TPM_DEVICE_TEST=1, because it extends PCRs 11 and 15.
// CRYPTINIT_EXPECT_PCR11 (hex) is the predicted PCR 11 before any phase
// (`cryptctl pcr predict --phase ""`); CRYPTINIT_EXPECT_SECUREBOOT ("0" or
// "1") is the expected Secure Boot state read from efivarfs;
// CRYPTINIT_REPORT_SECUREBOOT=1 only logs it.
func TestDeviceInitrdFlow(t *testing.T) {
	if os.Getenv("CRYPTINIT_TPM_DEVICE_TEST") != "1" {
		t.Skip("set CRYPTINIT_TPM_DEVICE_TEST=1 in a VM booted from a signed UKI")
	}
	dev, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	v, err := ReadPCRs(dev, []int{SecureBootPCR, UKIPCR, LatchPCR})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PCR 7 = %x\nPCR 11 = %x\nPCR 15 = %x", v[0], v[1], v[2])
	if want := os.Getenv("CRYPTINIT_EXPECT_PCR11"); want != "" {
		if got := hex.EncodeToString(v[1]); got != want {
			t.Fatalf("PCR 11 after systemd-stub = %s, predicted %s", got, want)
		}
		t.Logf("PCR 11 matches the prediction")
	}
	if want := os.Getenv("CRYPTINIT_EXPECT_SECUREBOOT"); want != "" || os.Getenv("CRYPTINIT_REPORT_SECUREBOOT") == "1" {
		st, err := ReadSecureBootState(EFIVarsPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Secure Boot state: %v", st)
		if got := fmt.Sprint(b2i(st.Enabled())); want != "" && got != want {
			t.Fatalf("Secure Boot enabled = %s, want %s", got, want)
		}
		if err := RequireSecureBoot(EFIVarsPath); (err == nil) != st.Enabled() {
			t.Fatalf("RequireSecureBoot = %v with %v", err, st)
		}
	}
	m := &Measurer{TPM: dev, Log: testLogger{t}}
	if err := m.MeasurePhase(PhaseEnterInitrd); err != nil {
		t.Fatal(err)
	}
	s := NewSealer(dev, StubSource())
	ctx := context.Background()
	sealed, err := s.Seal(ctx, secret32(), []int{SecureBootPCR, LatchPCR})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unseal(ctx, sealed)
	if err != nil || !bytes.Equal(got, secret32()) {
		t.Fatalf("unseal in the initrd: %x, %v", got, err)
	}
	t.Logf("sealed and unsealed with the UKI's signed PCR 11 policy")
	if err := m.LatchVolumeKey("STATE", []byte("volume key")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrPCRMismatch) {
		t.Fatalf("unseal after the PCR 15 latch: %v, want ErrPCRMismatch", err)
	}
	if err := m.MeasurePhase(PhaseLeaveInitrd); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unseal(ctx, sealed); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unseal after leave-initrd: %v, want ErrNoSignature", err)
	}
}

type testLogger struct{ t *testing.T }

func (l testLogger) Printf(format string, args ...any) { l.t.Logf(format, args...) }
