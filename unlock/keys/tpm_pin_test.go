package keys

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/tpm"
)

// pinTPM is a TPM whose systemd-tpm2 objects open with one PIN; it records
// the PINs it was sent.
type pinTPM struct {
	TPM
	pin  string
	sent []string
	err  error // returned instead, when set
}

func (p *pinTPM) UnsealSystemd(ctx context.Context, tok *tpm.SystemdToken) ([]byte, error) {
	return p.UnsealSystemdPIN(ctx, tok, nil)
}

func (p *pinTPM) UnsealSystemdPIN(ctx context.Context, tok *tpm.SystemdToken, pin []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // as the real Sealer does
	}
	if tok.PIN && pin == nil {
		return nil, tpm.ErrPINRequired
	}
	p.sent = append(p.sent, string(pin))
	switch {
	case p.err != nil:
		return nil, p.err
	case string(pin) != p.pin:
		return nil, tpm.ErrWrongPIN
	}
	return []byte("cGFzcw=="), nil
}

func TestSystemdPINTries(t *testing.T) {
	slot := Slot{VolumeID: "u-data", Slot: 1, Assigned: [][]byte{[]byte(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AA==","tpm2-pin":true}`)}}
	for _, tc := range []struct {
		name    string
		typed   []string
		tpmErr  error
		sent    []string
		wantErr error
	}{
		{"right first", []string{"1234"}, nil, []string{"1234"}, nil},
		{"empty PIN is not sent", []string{"", "1234"}, nil, []string{"1234"}, nil},
		{"wrong, wrong, right", []string{"1", "2", "1234"}, nil, []string{"1", "2", "1234"}, nil},
		{"three wrong", []string{"1", "2", "3", "1234"}, nil, []string{"1", "2", "3"}, tpm.ErrWrongPIN},
		{"lockout ends the questions", []string{"1", "1234"}, tpm.ErrPINLockout, []string{"1"}, tpm.ErrPINLockout},
		{"PCR mismatch ends the questions", []string{"1234", "1234"}, tpm.ErrPCRMismatch, []string{"1234"}, tpm.ErrPCRMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := &pinTPM{pin: "1234", err: tc.tpmErr}
			k := &TPMKey{TPM: tp, PIN: &pinsTyped{pins: tc.typed}}
			pass, err := k.Passphrase(context.Background(), slot)
			if tc.wantErr == nil && (err != nil || string(pass) != "cGFzcw==") {
				t.Fatalf("got %q, %v", pass, err)
			}
			if tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !errors.Is(err, ErrKeyUnavailable)) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(tp.sent, tc.sent) {
				t.Fatalf("sent to the TPM %q, want %q", tp.sent, tc.sent)
			}
		})
	}
	// no console: not asked, not sent
	tp := &pinTPM{pin: "1234"}
	if _, err := (&TPMKey{TPM: tp}).Passphrase(context.Background(), slot); !errors.Is(err, ErrKeyUnavailable) || len(tp.sent) != 0 {
		t.Fatalf("without a console: %v, sent %q", err, tp.sent)
	}
}

// slowPINs types its PIN only after a delay, as a person who waited for the
// console behind another volume's question does.
type slowPINs struct {
	delay time.Duration
	pin   string
}

func (s *slowPINs) TPMPIN(volume string, try, tries int) ([]byte, error) {
	time.Sleep(s.delay)
	return []byte(s.pin), nil
}

// The key budget (the engine's per-key timeout) does not run out while a
// person is asked: a right PIN typed after it opens, and a cancelled boot
// still stops the unseal.
func TestSystemdPINAfterKeyTimeout(t *testing.T) {
	slot := Slot{VolumeID: "u-data", Slot: 1, Assigned: [][]byte{[]byte(`{"type":"systemd-tpm2","keyslots":["1"],"tpm2-blob":"AA==","tpm2-pin":true}`)}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	tp := &pinTPM{pin: "1234"}
	k := &TPMKey{TPM: tp, PIN: &slowPINs{delay: 60 * time.Millisecond, pin: "1234"}}
	if pass, err := k.Passphrase(ctx, slot); err != nil || string(pass) != "cGFzcw==" {
		t.Fatalf("a right PIN typed after the key timeout: %q, %v", pass, err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := (&TPMKey{TPM: &pinTPM{pin: "1234"}, PIN: &slowPINs{pin: "1234"}}).Passphrase(cctx, slot); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled boot: %v, want context.Canceled", err)
	}
}
