package unlock

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// TestForeignTPMSlotIgnoresLatch pins a documented exception of the PCR 15
// latch (README, threat model): a slot systemd-cryptenroll bound to PCR 7
// alone opens as a configured tpm key, and still opens after PCR 15 was
// extended (the latch of the debug shell or of another volume), on a real
// TPM (swtpm). The boot log and the sync report say so in one warning.
func TestForeignTPMSlotIgnoresLatch(t *testing.T) {
	sw := swtpmtest.Start(t, "")
	tr := tpm.NewStreamTransport(sw.Conn)
	d := sha256.Sum256([]byte("secureboot-on"))
	if err := tpm.ExtendPCR(tr, tpm.SecureBootPCR, d[:]); err != nil {
		t.Fatal(err)
	}
	values, err := tpm.ReadPCRs(tr, []int{tpm.SecureBootPCR})
	if err != nil {
		t.Fatal(err)
	}

	dev := image(t, imageSize)
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 1, static: {passphrase: a}}\n" + smallKDF
	r, err := (&Engine{}).Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{7}, 32)
	if _, err := luks2.AddKeyslot(dev, r.VolumeKey, []byte(base64.StdEncoding.EncodeToString(secret)), 0, luks2.KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}); err != nil {
		t.Fatal(err)
	}
	r.Zero()
	var tok []byte
	for try := 0; try < 3; try++ { // a fresh swtpm answers TPM_RC_RETRY while it tests an algorithm first used
		if tok, err = tpm.EnrollSystemd(tr, secret, []int{tpm.SecureBootPCR}, values, 0); !errors.Is(err, tpm2.TPMRCRetry) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.ImportToken(dev, 2, tok, false); err != nil {
		t.Fatal(err)
	}

	y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, tpm: {}}\n    - {slot: 1, static: {passphrase: a}}\n" + smallKDF
	for _, when := range []string{"before the latch", "after PCR 15 was extended"} {
		if when != "before the latch" {
			latch := sha256.Sum256([]byte("debug-shell latch"))
			if err := tpm.ExtendPCR(tr, tpm.LatchPCR, latch[:]); err != nil {
				t.Fatal(err)
			}
		}
		var log bytes.Buffer
		e := &Engine{Env: keys.Env{TPM: tpm.NewSealer(tr, &tpm.StaticSource{})}, Log: slog.New(slog.NewTextHandler(&log, nil))}
		r, err := e.Unlock(ctx, volume(t, y, "u-data"), dev, imageSize)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		r.Zero()
		if r.Slot != 0 {
			t.Fatalf("%s: opened slot %d, want the systemd-tpm2 slot 0", when, r.Slot)
		}
		var lines []string
		for _, l := range strings.Split(log.String(), "\n") {
			if strings.Contains(l, "not PCR 15") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "u-data slot 0 (tpm) opens through its systemd-tpm2 token, whose policy binds PCRs [7]") {
			t.Errorf("%s: want one warning line about slot 0 and PCR 15, log:\n%s", when, log.String())
		}
		if len(r.Sync.Warnings) != 1 || !strings.Contains(r.Sync.String(), "warning: u-data slot 0 (tpm)") {
			t.Errorf("%s: sync report %q lacks the warning", when, r.Sync)
		}
	}
}
