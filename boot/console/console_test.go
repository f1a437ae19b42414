package console

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLoggerFormat(t *testing.T) {
	var con, kmsg bytes.Buffer
	start := time.Unix(100, 0)
	l := NewLogger(start, &con, &kmsg)
	l.now = func() time.Time { return start.Add(1234567 * time.Microsecond) }
	l.Printf("mounted %s\nsecond line", "/proc")
	l.Raw("timeline {}", "cryptinit: FAIL x")
	want := "cryptinit: +1.235s mounted /proc\ncryptinit: +1.235s second line\ncryptinit: timeline {}\ncryptinit: FAIL x\n"
	if con.String() != want {
		t.Errorf("console got\n%q\nwant\n%q", con.String(), want)
	}
	if !strings.HasPrefix(kmsg.String(), "<15>cryptinit: +1.235s mounted /proc\n<15>cryptinit: +1.235s second line\n<15>") {
		t.Errorf("kmsg got %q", kmsg.String())
	}
	if c := strings.Count(kmsg.String(), "<15>"); c != 4 {
		t.Errorf("kmsg has %d records, want 4 (one per line)", c)
	}
}

func TestLoggerNilOutputs(t *testing.T) {
	l := NewLogger(time.Now(), nil, nil)
	l.Printf("no outputs yet") // must not panic
	var con bytes.Buffer
	l.SetOutputs(&con, nil)
	fmt.Fprintf(l, "via Write\n")
	if !strings.Contains(con.String(), "via Write\n") || strings.Count(con.String(), "\n") != 1 {
		t.Errorf("got %q", con.String())
	}
}

func TestBanner(t *testing.T) {
	f := Failure{
		Volume: "EPHEMERAL",
		Device: "/dev/vda4",
		Reason: errors.New("no key slot opened the volume"),
		Slots: []SlotReport{
			{Slot: 0, Kind: "tpm", Err: errors.New("PCR policy mismatch")},
			{Slot: 1, Kind: "kms", Err: errors.New("connection refused")},
			{Slot: -1, Kind: "console passphrase", Err: errors.New("no passphrase typed")},
		},
		Hint: "check the KMS endpoint\nor type a recovery key",
	}
	lines := f.Banner("10s", false)
	text := strings.Join(lines, "\n")
	if lines[0] != "FAIL EPHEMERAL: no key slot opened the volume (tried: 0 tpm, 1 kms, console passphrase)" {
		t.Errorf("first line %q", lines[0])
	}
	for _, want := range []string{"/dev/vda4", "slot 0 (tpm): failed: PCR policy mismatch", "slot 1 (kms): failed: connection refused", "any slot (console passphrase): failed: no passphrase typed",
		"what to do: check the KMS endpoint", "or type a recovery key", "rebooting in 10s"} {
		if !strings.Contains(text, want) {
			t.Errorf("banner lacks %q:\n%s", want, text)
		}
	}
	shell := strings.Join(Failure{Reason: errors.New("x")}.Banner("10s", true), "\n")
	if !strings.Contains(shell, "FAIL boot: x") || !strings.Contains(shell, "starting a shell") || strings.Contains(shell, "rebooting in") {
		t.Errorf("shell banner:\n%s", shell)
	}
}

// openPTY returns the master and slave of a new pseudo terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo terminals here: %v", err)
	}
	var n int
	err = withFD(m, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		t.Skipf("unlockpt/ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open slave: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

func TestPromptNoEcho(t *testing.T) {
	master, slave := openPTY(t)
	p := &Prompter{TTY: slave, Timeout: 5 * time.Second}
	out := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 512)
		deadline := time.Now().Add(3 * time.Second)
		master.SetReadDeadline(deadline)
		for {
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if bytes.Contains(all, []byte("press Enter:")) {
				master.Write([]byte("s3cret pass\n"))
				break
			}
			if err != nil {
				break
			}
		}
		// Collect whatever the terminal echoes after the answer.
		master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		out <- string(all)
	}()
	got, err := p.Passphrase("STATE", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "s3cret pass" {
		t.Errorf("passphrase %q", got)
	}
	screen := <-out
	if !strings.Contains(screen, "for STATE (try 1 of 3") {
		t.Errorf("prompt not shown: %q", screen)
	}
	if strings.Contains(screen, "s3cret") {
		t.Errorf("passphrase echoed: %q", screen)
	}
	// Echo is back on afterwards.
	var tio *unix.Termios
	if err := withFD(slave, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS); return }); err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&unix.ECHO == 0 {
		t.Error("echo not restored")
	}
}

// TestPromptTPMPIN: the TPM PIN question names the volume, does not echo,
// and hands back the PIN as typed.
func TestPromptTPMPIN(t *testing.T) {
	master, slave := openPTY(t)
	p := &Prompter{TTY: slave, Timeout: 5 * time.Second}
	out := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 512)
		master.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if bytes.Contains(all, []byte("press Enter:")) {
				master.Write([]byte("2468 13\n"))
				break
			}
			if err != nil {
				break
			}
		}
		master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		out <- string(all)
	}()
	got, err := p.TPMPIN("u-data", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "2468 13" {
		t.Errorf("PIN %q", got)
	}
	screen := <-out
	if !strings.Contains(screen, "Enter TPM2 PIN for u-data (try 2 of 3") {
		t.Errorf("PIN prompt not shown: %q", screen)
	}
	if strings.Contains(screen, "2468") {
		t.Errorf("PIN echoed: %q", screen)
	}
}

func TestPromptTimeout(t *testing.T) {
	_, slave := openPTY(t)
	p := &Prompter{TTY: slave, Timeout: 100 * time.Millisecond}
	_, err := p.Passphrase("u-data", 1, 1)
	if !errors.Is(err, ErrPromptTimeout) {
		t.Fatalf("got %v, want ErrPromptTimeout", err)
	}
}

func TestPromptNoTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := (&Prompter{TTY: f}).Passphrase("STATE", 1, 1); !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("got %v, want ErrNoTerminal", err)
	}
	if _, err := (&Prompter{}).Passphrase("STATE", 1, 1); !errors.Is(err, ErrNoTerminal) {
		t.Fatalf("nil TTY: got %v", err)
	}
}

// Mute keeps lines off the console but not out of the kernel log, until
// unmuted.
func TestLoggerMute(t *testing.T) {
	var con, kmsg bytes.Buffer
	l := NewLogger(time.Now(), &con, &kmsg)
	l.Printf("before")
	unmute := l.Mute()
	l.Printf("during")
	unmute()
	l.Printf("after")
	if got := con.String(); !strings.Contains(got, "before") || strings.Contains(got, "during") || !strings.Contains(got, "after") {
		t.Errorf("console %q: want before and after, not during", got)
	}
	if got := kmsg.String(); !strings.Contains(got, "during") {
		t.Errorf("kernel log %q lost the muted line", got)
	}
}
