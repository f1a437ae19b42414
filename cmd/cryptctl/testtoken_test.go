package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/luks2/luks2test"
)

var tokenTestKDF = luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}

// bootTPM measures a Secure Boot state into PCR 7 and a UKI into PCR 11,
// then enter-initrd, and returns a PCR signing key and its signature of
// the current PCR 11.
func bootTPM(t *testing.T, tp transport.TPM) (*rsa.PrivateKey, tpm.Signatures) {
	t.Helper()
	for _, m := range []struct {
		pcr int
		ev  string
	}{{tpm.SecureBootPCR, "secureboot-on"}, {tpm.UKIPCR, ".linux kernel"}} {
		d := sha256.Sum256([]byte(m.ev))
		if err := tpm.ExtendPCR(tp, m.pcr, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tpm.MeasurePhase(tp, tpm.PhaseEnterInitrd, nil); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tpm.ReadPCRs(tp, []int{tpm.UKIPCR})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := tpm.SignPolicy(key, []int{tpm.UKIPCR}, v)
	if err != nil {
		t.Fatal(err)
	}
	return key, tpm.Signatures{"sha256": {sig}}
}

// changePCR7 extends PCR 7, as turning Secure Boot off would.
func changePCR7(t *testing.T, tp transport.TPM) {
	t.Helper()
	d := sha256.Sum256([]byte("secureboot-off"))
	if err := tpm.ExtendPCR(tp, tpm.SecureBootPCR, d[:]); err != nil {
		t.Fatal(err)
	}
}

// enrolledImage makes a LUKS2 image with a static slot 0, a talos-tpm2 slot
// 1 (token 1) sealed by keys.TPMKey, and a systemd-tpm2 slot 2 (token 5)
// sealed by tpm.EnrollSystemd to PCR 7.
func enrolledImage(t *testing.T, tp transport.TPM, src tpm.PolicySource) string {
	t.Helper()
	img := luks2test.NewImage(t, 20<<20)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if _, err := luks2.Format(f, st.Size(), []byte("zero"), luks2.FormatOptions{KDF: tokenTestKDF}); err != nil {
		t.Fatal(err)
	}
	h, err := luks2.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	vk, _, err := h.Unlock(f, []byte("zero"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enr, err := (&keys.TPMKey{TPM: tpm.NewSealer(tp, src), Rand: rand.Reader}).Enroll(ctx, keys.Slot{Slot: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.AddKeyslot(f, vk, enr.Passphrase, 1, tokenTestKDF); err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.ImportToken(f, 1, enr.Token, false); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	pcr7, err := tpm.ReadPCRs(tp, []int{tpm.SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tpm.EnrollSystemd(tp, secret, []int{tpm.SecureBootPCR}, pcr7, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.AddKeyslot(f, vk, []byte(base64.StdEncoding.EncodeToString(secret)), 2, tokenTestKDF); err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.ImportToken(f, 5, tok, false); err != nil {
		t.Fatal(err)
	}
	return img
}

func readHeader(t *testing.T, img string) (*os.File, *luks2.Header) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	h, err := luks2.ReadHeader(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, h
}

// simulatorImage boots the go-tpm-tools simulator (bootTPM) and enrolls an
// image with both token shapes on it (enrolledImage); the simulator is
// closed at cleanup.
func simulatorImage(t *testing.T) (transport.TPMCloser, tpm.StaticSource, string) {
	t.Helper()
	sim, err := simulator.OpenSimulator()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	key, sigs := bootTPM(t, sim)
	src := tpm.StaticSource{Key: &key.PublicKey, Sigs: sigs}
	return sim, src, enrolledImage(t, sim, src)
}

// TestTestTokensSimulator: on the go-tpm-tools simulator, both token shapes
// our enrollment writes unseal and open their slots; after PCR 7 changes
// neither does, and the report names PCR 7 and the policy mismatch.
func TestTestTokensSimulator(t *testing.T) {
	sim, src, img := simulatorImage(t)
	f, h := readHeader(t, img)
	ctx := context.Background()

	res := testTokens(ctx, f, h, sim, nil, src, -1)
	if len(res) != 2 || res[0].ID != 1 || res[0].Opened != 1 || res[1].ID != 5 || res[1].Opened != 2 {
		t.Fatalf("before the PCR change: %+v", res)
	}
	var out bytes.Buffer
	if !printTokenResults(&out, res) || !strings.Contains(out.String(), "token 5 (systemd-tpm2, key slots [2]): unsealed, opens key slot 2") {
		t.Fatalf("report:\n%s", out.String())
	}
	if res := testTokens(ctx, f, h, sim, nil, src, 5); len(res) != 1 || res[0].Opened != 2 {
		t.Fatalf("--token-id 5: %+v", res)
	}

	changePCR7(t, sim)
	res = testTokens(ctx, f, h, sim, nil, src, -1)
	out.Reset()
	if printTokenResults(&out, res) {
		t.Fatalf("a token opened after PCR 7 changed:\n%s", out.String())
	}
	report := out.String()
	for _, want := range []string{
		"token 1 (talos-tpm2, key slots [1]): FAILED: PCR 7 changed",
		"CHANGED", // PCR 7's line: now vs at sealing
		"token 5 (systemd-tpm2, key slots [2]): FAILED: policy mismatch",
		"POLICY MISMATCH",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if !strings.Contains(report, "PCR 7: now ") {
		t.Errorf("report does not show PCR 7's current value:\n%s", report)
	}
}

// TestTestTokensNoTPMAndPIN: without a TPM every token says "no TPM"; a
// PIN token says a PIN is required; a signed token past enter-initrd says
// no signature matches.
func TestTestTokensNoTPMAndPIN(t *testing.T) {
	sim, src, img := simulatorImage(t)
	f, h := readHeader(t, img)
	openErr := fmt.Errorf("open TPM: %w", tpm.ErrNoTPM)
	var out bytes.Buffer
	if printTokenResults(&out, testTokens(context.Background(), f, h, nil, openErr, src, -1)) ||
		strings.Count(out.String(), "FAILED: no TPM") != 2 {
		t.Fatalf("no TPM:\n%s", out.String())
	}

	// the systemd token, marked as needing a PIN
	w, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw := bytes.Replace(h.Tokens[5].Raw, []byte(`"tpm2-pin":false`), []byte(`"tpm2-pin":true`), 1)
	if bytes.Equal(raw, h.Tokens[5].Raw) {
		t.Fatalf("token has no tpm2-pin field: %s", raw)
	}
	if _, err := luks2.ImportToken(w, 5, raw, true); err != nil {
		t.Fatal(err)
	}
	w.Close()
	f, h = readHeader(t, img)
	res := testTokens(context.Background(), f, h, sim, nil, src, 5)
	out.Reset()
	if printTokenResults(&out, res) || !strings.Contains(out.String(), "FAILED: PIN required") {
		t.Fatalf("PIN token:\n%s", out.String())
	}

	// after leave-initrd (a running system) PCR 11 has moved past the
	// signed value: the talos-tpm2 token says so
	if err := tpm.MeasurePhase(sim, tpm.PhaseLeaveInitrd, nil); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if printTokenResults(&out, testTokens(context.Background(), f, h, sim, nil, src, 1)) ||
		!strings.Contains(out.String(), "FAILED: no PCR signature for the current PCR 11") {
		t.Fatalf("talos-tpm2 token after leave-initrd:\n%s", out.String())
	}
}

// TestLuksTestTokenSwtpm drives the commands on swtpm, named as
// systemd-cryptenroll names it: volume format seals a tpm key through
// --tpm, test-token exits 0 and writes nothing, volume open opens; after PCR
// 7 changes test-token exits 2 naming PCR 7; another TPM is a wrong SRK and
// a TPM that is not there is "no TPM".
func TestLuksTestTokenSwtpm(t *testing.T) {
	spec, policy := swtpmVolume(t)
	cfg := filepath.Join(t.TempDir(), "tpm.yaml")
	os.WriteFile(cfg, []byte("kind: VolumeConfig\nname: EPHEMERAL\nencryption:\n  keys:\n    - {slot: 0, tpm: {options: {pcrs: [7]}}}\n"+
		"  kdf: {type: pbkdf2, iterations: 1000}\n"), 0o600)

	img := luks2test.NewImage(t, 20<<20)
	vol := append([]string{"--config", cfg, "--volume", "EPHEMERAL", img, "--tpm", spec}, policy...)
	if out, err := cryptctl(t, append([]string{"volume", "format"}, vol...)...); err != nil || !strings.Contains(out, "formatted EPHEMERAL") {
		t.Fatalf("volume format --tpm: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(img)
	testToken := append([]string{"luks", "test-token", img, "--tpm", spec}, policy...)
	if out, err := cryptctl(t, testToken...); err != nil || !strings.Contains(out, "token 0 (talos-tpm2, key slots [0]): unsealed, opens key slot 0") {
		t.Fatalf("test-token: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("test-token changed the image")
	}
	if out, err := cryptctl(t, append([]string{"volume", "open"}, vol...)...); err != nil || !strings.Contains(out, "with slot 0 (tpm)") {
		t.Fatalf("volume open --tpm: %v\n%s", err, out)
	}
	if out, err := cryptctl(t, append([]string{"volume", "sync"}, vol...)...); err != nil || !strings.Contains(out, "with slot 0 (tpm)") {
		t.Fatalf("volume sync --tpm: %v\n%s", err, out)
	}

	tp2, err := tpm.OpenSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	changePCR7(t, tp2)
	tp2.Close()
	out, err := cryptctl(t, testToken...)
	t.Logf("after PCR 7 changed:\n%s", out)
	if exitCode(err) != 2 || !strings.Contains(out, "FAILED: PCR 7 changed") || !strings.Contains(out, "PCR 7: now ") {
		t.Fatalf("test-token after PCR 7 changed: exit %d, %v\n%s", exitCode(err), err, out)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Fatal("a failing test-token changed the image")
	}

	other := swtpmtest.Start(t, "")
	otherPort := other.Port()
	other.Conn.Close()
	out, err = cryptctl(t, append([]string{"luks", "test-token", img, "--tpm", fmt.Sprintf("swtpm:port=%d", otherPort)}, policy...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "wrong SRK") {
		t.Fatalf("test-token on another TPM: exit %d, %v\n%s", exitCode(err), err, out)
	}
	out, err = cryptctl(t, append([]string{"luks", "test-token", img, "--tpm", "/nonexistent/tpmrm0"}, policy...)...)
	if exitCode(err) != 2 || !strings.Contains(out, "FAILED: no TPM") {
		t.Fatalf("test-token without a TPM: exit %d, %v\n%s", exitCode(err), err, out)
	}
}

// TestTokenReason: the few words test-token prints for a failure come from
// the error's identity, not its text: a PIN token wrapped with context is
// still "PIN required", and another error that merely starts with those
// words is not.
func TestTokenReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errPINRequired, "PIN required"},
		{fmt.Errorf("token 5: %w: enrolled with --tpm2-with-pin", errPINRequired), "PIN required"},
		{errors.New("PIN required by the policy file, which is missing"), "error"},
		{fmt.Errorf("open TPM: %w", tpm.ErrNoTPM), "no TPM"},
		{fmt.Errorf("key slot 0: %w", luks2.ErrNoKeyslotOpens), "wrong key"},
	} {
		if got := tokenReason(tc.err); got != tc.want {
			t.Errorf("tokenReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
