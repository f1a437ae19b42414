package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

const stubPath = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// testUKISections is a fake UKI payload, listed in file order (which is not
// the stub's measurement order), with a .uname that stub 252 ignores.
var testUKISections = []UKISection{
	{".osrel", []byte("ID=cryptinit\nVERSION_ID=1\n")},
	{".cmdline", []byte("console=ttyS0 cryptinit.debug=0")},
	{".uname", []byte("6.1.0-test")},
	{".linux", bytes.Repeat([]byte("kernel"), 3000)},
	{".initrd", bytes.Repeat([]byte{0, 1, 2, 3, 4}, 5000)},
}

// buildTestUKI puts testUKISections onto systemd-stub 252 with objcopy.
func buildTestUKI(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(stubPath); err != nil {
		testenv.Missing(t, "systemd-stub not installed (apt-get install systemd-boot-efi): %v", err)
	}
	if _, err := exec.LookPath(Objcopy); err != nil {
		testenv.Missing(t, "objcopy not installed (binutils): %v", err)
	}
	out := filepath.Join(t.TempDir(), "test.efi")
	if err := AddUKISections(context.Background(), stubPath, out, testUKISections...); err != nil {
		t.Fatal(err)
	}
	return out
}

// stubEvents extends, independently of UKIEvents, what stub 252 measures for
// testUKISections plus a .pcrpkey: name\0 then content, in its section order.
func expectedStubDigests(pcrpkey []byte) [][]byte {
	content := map[string][]byte{".pcrpkey": pcrpkey}
	for _, s := range testUKISections {
		content[s.Name] = s.Data
	}
	var out [][]byte
	for _, name := range []string{".linux", ".osrel", ".cmdline", ".initrd", ".pcrpkey"} {
		if content[name] == nil {
			continue
		}
		n := sha256.Sum256(append([]byte(name), 0))
		d := sha256.Sum256(content[name])
		out = append(out, n[:], d[:])
	}
	return out
}

func TestPredictMatchesSimulatedBoot(t *testing.T) {
	uki := buildTestUKI(t)
	sim := openSimulator(t)
	f, err := os.Open(uki)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	predicted, events, err := PredictPCR11(f, PhaseEnterInitrd)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 9 { // 4 sections × 2 + phase
		t.Errorf("%d events, want 9: %+v", len(events), events)
	}
	for _, d := range expectedStubDigests(nil) {
		if err := ExtendPCR(sim, UKIPCR, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := MeasurePhase(sim, PhaseEnterInitrd, nil); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPCRs(sim, []int{UKIPCR})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0], predicted) {
		t.Fatalf("TPM PCR 11 %x, predicted %x", got[0], predicted)
	}
}

func TestSignUKIEndToEnd(t *testing.T) {
	uki := buildTestUKI(t)
	key, _ := signingKeys(t)
	out := filepath.Join(t.TempDir(), "signed.efi")
	ctx := context.Background()
	sigs, err := SignUKI(ctx, uki, out, key)
	if err != nil {
		t.Fatal(err)
	}
	pcrpkey, err := ReadUKISection(out, ".pcrpkey")
	if err != nil {
		t.Fatal(err)
	}
	pcrsig, err := ReadUKISection(out, ".pcrsig")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseSignatures(pcrsig)
	if err != nil {
		t.Fatal(err)
	}
	if len(parsed["sha256"]) != 1 || !reflect.DeepEqual(parsed["sha256"][0], sigs["sha256"][0]) {
		t.Fatalf(".pcrsig = %s, want %+v", pcrsig, sigs)
	}
	if _, err := SignUKI(ctx, out, filepath.Join(t.TempDir(), "again.efi"), key); err == nil {
		t.Error("signing an already signed UKI succeeded")
	}

	// Boot it on the simulator as the stub would, via the /.extra files.
	sim := openSimulator(t)
	d := sha256.Sum256([]byte("secure boot db"))
	if err := ExtendPCR(sim, SecureBootPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	for _, d := range expectedStubDigests(pcrpkey) {
		if err := ExtendPCR(sim, UKIPCR, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := MeasurePhase(sim, PhaseEnterInitrd, nil); err != nil {
		t.Fatal(err)
	}
	extra := t.TempDir()
	src := FileSource{PublicKeyPath: filepath.Join(extra, "tpm2-pcr-public-key.pem"), SignaturePath: filepath.Join(extra, "tpm2-pcr-signature.json")}
	if err := os.WriteFile(src.PublicKeyPath, pcrpkey, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src.SignaturePath, pcrsig, 0o644); err != nil {
		t.Fatal(err)
	}
	s := NewSealer(sim, src)
	sealed, err := s.Seal(ctx, secret32(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Unseal(ctx, sealed)
	if err != nil || !bytes.Equal(got, secret32()) {
		t.Fatalf("unseal with the UKI's own signature: %x, %v", got, err)
	}
}

func TestSignatureJSONRoundTrip(t *testing.T) {
	key, _ := signingKeys(t)
	v := bytes.Repeat([]byte{0xab}, 32)
	sig, err := SignPolicy(key, []int{11}, [][]byte{v})
	if err != nil {
		t.Fatal(err)
	}
	in := Signatures{"sha256": {sig}, "sha1": {{PCRs: []int{11}, PKFP: "aa", Pol: "bb", Sig: "cc"}}}
	js, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// systemd's shape: bank -> list of {pcrs,pkfp,pol,sig}.
	want := `{"pcrs":[11],"pkfp":"` + Fingerprint(&key.PublicKey) + `","pol":"` + sig.Pol + `","sig":"` + sig.Sig + `"}`
	if !bytes.Contains(js, []byte(want)) {
		t.Fatalf("JSON %s lacks %s", js, want)
	}
	out, err := ParseSignatures(js)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || !reflect.DeepEqual(out["sha256"][0], sig) || out["sha1"][0].Pol != "bb" {
		t.Fatalf("round trip = %+v", out)
	}
	pol, _ := PolicyPCRDigest([]int{11}, [][]byte{v})
	if found, ok := out.find(pol); !ok || !reflect.DeepEqual(found, sig) {
		t.Fatalf("find(%x) = %+v, %v", pol, found, ok)
	}
	if _, err := ParseSignatures([]byte(`{"sha256":`)); err == nil {
		t.Error("truncated JSON parsed")
	}
	pemKey, err := MarshalPublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePublicKeyPEM(pemKey)
	if err != nil || !back.Equal(&key.PublicKey) {
		t.Fatalf("public key PEM round trip: %v", err)
	}
}
