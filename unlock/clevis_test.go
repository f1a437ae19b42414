package unlock

import (
	"crypto/sha256"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/tpm/swtpmtest"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// clevisSwtpm is a swtpm that Debian's clevis (through tpm2-tools and the
// tpm2-tss swtpm TCTI) and our code take turns on: swtpm serves one
// connection at a time, so each side dials, works and hangs up.
type clevisSwtpm struct {
	addr string
	tcti string // TPM2TOOLS_TCTI for tpm2-tools
}

func startClevisSwtpm(t *testing.T) *clevisSwtpm {
	t.Helper()
	sw := swtpmtest.Start(t, "")
	addr := sw.Conn.RemoteAddr().(*net.TCPAddr)
	_ = sw.Conn.Close() // free swtpm for the next client; cleanup still ends it
	return &clevisSwtpm{addr: addr.String(), tcti: "swtpm:host=127.0.0.1,port=" + strconv.Itoa(addr.Port)}
}

// dial connects our side; close it before the tools run again.
func (s *clevisSwtpm) dial(t *testing.T) transport.TPMCloser {
	t.Helper()
	var conn net.Conn
	var err error
	for i := 0; i < 100; i++ { // swtpm may still be closing the tools' connection
		if conn, err = net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return tpm.NewStreamTransport(conn)
}

// reset flushes the sessions tpm2-tools leaves behind on a TPM without a
// resource manager (one saved session per bind: swtpm then has no session
// memory left), as the reset of the next boot would.
func (s *clevisSwtpm) reset(t *testing.T) {
	t.Helper()
	conn := s.dial(t)
	defer conn.Close()
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTHMACSession, tpm2.TPMHTPolicySession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(ht) << 24, PropertyCount: 64}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs.Handle {
			_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(conn)
		}
	}
}

// clevisBind runs the real `clevis luks bind` on img (a regular file:
// clevis 19 accepts it, cryptsetup works on image files) with the existing
// passphrase on stdin, against the swtpm.
func (s *clevisSwtpm) clevisBind(t *testing.T, img, existing, cfg string) {
	t.Helper()
	s.reset(t)
	cmd := exec.Command("clevis", "luks", "bind", "-y", "-k", "-", "-d", img, "tpm2", cfg)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.tcti)
	cmd.Stdin = strings.NewReader(existing)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clevis luks bind tpm2 %s: %v\n%s", cfg, err, out)
	}
}

// TestClevisBoundSlotOpens binds LUKS2 key slots with Debian's real clevis
// (tpm2 pin, over a swtpm) and opens them with the engine the way the boot
// does: a slot configured as a tpm key whose clevis token lists it opens
// with no other configuration. A PCR bound by clevis that changes makes the
// slot unavailable (the TPM refuses), never wrong.
func TestClevisBoundSlotOpens(t *testing.T) {
	for _, tool := range []string{"clevis", "clevis-encrypt-tpm2", "tpm2_createprimary", "cryptsetup", "jose"} {
		needTool(t, tool)
	}
	sw := startClevisSwtpm(t)
	{ // firmware would have measured PCR 7 (both banks): a value to bind to
		conn := sw.dial(t)
		d := sha256.Sum256([]byte("secureboot-on"))
		_, err := tpm2.PCREvent{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(tpm.SecureBootPCR), Auth: tpm2.PasswordAuth(nil)},
			EventData: tpm2.TPM2BEvent{Buffer: d[:]}}.Execute(conn)
		_ = conn.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	dev := image(t, imageSize)
	e := &Engine{}
	first := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n" + smallKDF
	r, err := e.Unlock(ctx, volume(t, first, "u-data"), dev, imageSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	// clevis picks the first free slot for each bind: 1, 2, 3, 4.
	sw.clevisBind(t, dev.Name(), "a", `{"pcr_ids":"7"}`)                           // clevis's defaults: ecc, sha256, sha1 bank
	sw.clevisBind(t, dev.Name(), "a", `{"pcr_ids":"7","pcr_bank":"sha256"}`)       // sha256 bank
	sw.clevisBind(t, dev.Name(), "a", `{}`)                                        // no PCR policy
	sw.clevisBind(t, dev.Name(), "a", `{"pcr_ids":"7","key":"rsa","hash":"sha1"}`) // RSA primary, sha1 names
	sw.reset(t)
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	for slot := 1; slot <= 4; slot++ {
		if toks := assignedTokens(hdr, slot); len(toks) != 1 || keys.TokenType(toks[0]) != keys.TokenClevis {
			t.Fatalf("slot %d: clevis left tokens %q", slot, toks)
		}
	}

	openSlot := func(t *testing.T, slot int) (*Result, error) {
		t.Helper()
		conn := sw.dial(t)
		defer conn.Close()
		e := &Engine{Env: keys.Env{TPM: tpm.NewSealer(conn, &tpm.StaticSource{})}}
		y := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: " + strconv.Itoa(slot) + ", tpm: {}}\n" + smallKDF
		return e.Open(ctx, volume(t, y, "u-data"), dev)
	}
	for slot := 1; slot <= 4; slot++ {
		r, err := openSlot(t, slot)
		if err != nil {
			t.Fatalf("slot %d: %v", slot, err)
		}
		if r.Slot != slot {
			t.Errorf("opened slot %d, want %d", r.Slot, slot)
		}
		r.Zero()
	}

	// PCR 15 latched (debug shell, running system): clevis's policy does
	// not bind it, so the slot bound to PCR 7 alone still opens (README,
	// threat model: the exception of slots other tools enrolled).
	{
		conn := sw.dial(t)
		l := sha256.Sum256([]byte("latch"))
		err := tpm.ExtendPCR(conn, tpm.LatchPCR, l[:])
		_ = conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, err := openSlot(t, 1)
		if err != nil {
			t.Fatalf("clevis slot 1 after PCR 15 was extended: %v", err)
		}
		r.Zero()
	}

	// PCR 7 moves (Secure Boot keys changed): the PCR-bound slots are
	// refused by the TPM's policy, in either bank; the unbound one opens.
	conn := sw.dial(t)
	d := sha256.Sum256([]byte("secure boot keys changed"))
	_, err = tpm2.PCREvent{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(tpm.SecureBootPCR), Auth: tpm2.PasswordAuth(nil)},
		EventData: tpm2.TPM2BEvent{Buffer: d[:]}}.Execute(conn)
	_ = conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range []int{1, 2, 4} {
		_, err := openSlot(t, slot)
		if !errors.Is(err, ErrNoKeyOpens) || !strings.Contains(err.Error(), "key unavailable") || !strings.Contains(err.Error(), "PCRs [7]") {
			t.Errorf("slot %d after PCR 7 changed: err = %v, want no key opens: key unavailable, PCRs [7] changed", slot, err)
		}
		conn := sw.dial(t)
		k := &keys.TPMKey{TPM: tpm.NewSealer(conn, &tpm.StaticSource{})}
		_, err = k.Passphrase(ctx, keys.Slot{VolumeID: "u-data", Slot: slot, Assigned: assignedTokens(hdr, slot)})
		_ = conn.Close()
		if !errors.Is(err, tpm.ErrPCRMismatch) || !errors.Is(err, keys.ErrKeyUnavailable) || errors.Is(err, keys.ErrWrongKey) ||
			errors.Is(err, keys.ErrSealedStateChanged) {
			t.Errorf("slot %d key after PCR 7 changed: err = %v, want ErrPCRMismatch and ErrKeyUnavailable (and no re-enrollment: the slot is clevis's)", slot, err)
		}
	}
	if r, err := openSlot(t, 3); err != nil {
		t.Errorf("unbound slot 3 after PCR 7 changed: %v", err)
	} else {
		r.Zero()
	}

	// Another TPM (its own owner seed: another primary) cannot load the
	// sealed JWK, not even of the slot bound to no PCR.
	other := swtpmtest.Start(t, "")
	k := &keys.TPMKey{TPM: tpm.NewSealer(tpm.NewStreamTransport(other.Conn), &tpm.StaticSource{})}
	_, err = k.Passphrase(ctx, keys.Slot{VolumeID: "u-data", Slot: 3, Assigned: assignedTokens(hdr, 3)})
	if !errors.Is(err, tpm.ErrDifferentTPM) || !errors.Is(err, keys.ErrKeyUnavailable) {
		t.Errorf("slot 3 on another TPM: err = %v, want ErrDifferentTPM", err)
	}
	other.Stop()

	// A boot with every slot configured opens with the static key and its
	// sync keeps the clevis slots and tokens as clevis wrote them, also the
	// two that cannot unseal now (unavailable is not wrong).
	conn = sw.dial(t)
	e = &Engine{Env: keys.Env{TPM: tpm.NewSealer(conn, &tpm.StaticSource{})}}
	all := "kind: UserVolumeConfig\nname: data\nencryption:\n  keys:\n    - {slot: 0, static: {passphrase: a}}\n" +
		"    - {slot: 1, tpm: {}}\n    - {slot: 2, tpm: {}}\n    - {slot: 3, tpm: {}}\n    - {slot: 4, tpm: {}}\n" + smallKDF
	r, err = e.Unlock(ctx, volume(t, all, "u-data"), dev, imageSize)
	_ = conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	r.Zero()
	after, err := luks2.ReadHeader(dev)
	if err != nil {
		t.Fatal(err)
	}
	if got := slotsOf(t, dev); len(got) != 5 || len(r.Sync.Replaced)+len(r.Sync.Removed) != 0 {
		t.Fatalf("slots %v after sync %v, want 0-4 kept", got, r.Sync)
	}
	for slot := 1; slot <= 4; slot++ {
		if a, b := assignedTokens(after, slot), assignedTokens(hdr, slot); len(a) != 1 || string(a[0]) != string(b[0]) {
			t.Errorf("slot %d: sync changed the clevis token %s to %q", slot, b, a)
		}
	}
}
