package console

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// answerOn waits on master until the prompt shows, then types answer (when
// not empty); it returns everything the terminal showed.
func answerOn(master *os.File, answer string) <-chan string {
	out := make(chan string, 1)
	go func() {
		var all []byte
		buf := make([]byte, 512)
		master.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			n, err := master.Read(buf)
			all = append(all, buf[:n]...)
			if bytes.Contains(all, []byte("press Enter:")) {
				if answer != "" {
					master.Write([]byte(answer + "\n"))
				}
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
	return out
}

// TestPromptOtherTerminal: with the serial console and a keyboard's VT, the
// question shows on both and a line typed on either is the answer; neither
// echoes it, and both get their echo back.
func TestPromptOtherTerminal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		onOther  bool // type on the VT, not on the console
		wantPass string
	}{
		{"typed on the keyboard's VT", true, "vt pass"},
		{"typed on the serial console", false, "serial pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conM, conS := openPTY(t)
			vtM, vtS := openPTY(t)
			p := &Prompter{TTY: conS, Others: []*os.File{vtS}, Timeout: 5 * time.Second}
			conAnswer, vtAnswer := tc.wantPass, ""
			if tc.onOther {
				conAnswer, vtAnswer = "", tc.wantPass
			}
			conScreen, vtScreen := answerOn(conM, conAnswer), answerOn(vtM, vtAnswer)
			start := time.Now()
			got, err := p.Passphrase("EPHEMERAL", 1, 3)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.wantPass {
				t.Errorf("passphrase %q, want %q", got, tc.wantPass)
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("the answer took %s: the prompt waited for the other terminal", d)
			}
			for name, screen := range map[string]string{"console": <-conScreen, "VT": <-vtScreen} {
				if !strings.Contains(screen, "for EPHEMERAL (try 1 of 3") {
					t.Errorf("%s: prompt not shown: %q", name, screen)
				}
				if strings.Contains(screen, tc.wantPass) {
					t.Errorf("%s: passphrase echoed: %q", name, screen)
				}
			}
			for name, f := range map[string]*os.File{"console": conS, "VT": vtS} {
				var tio *unix.Termios
				if err := withFD(f, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS); return }); err != nil {
					t.Fatal(err)
				}
				if tio.Lflag&unix.ECHO == 0 {
					t.Errorf("%s: echo not restored", name)
				}
			}
		})
	}
}

// TestPromptOthersTimeout: nobody types on either terminal: the timeout.
func TestPromptOthersTimeout(t *testing.T) {
	_, conS := openPTY(t)
	_, vtS := openPTY(t)
	p := &Prompter{TTY: conS, Others: []*os.File{vtS}, Timeout: 100 * time.Millisecond}
	if _, err := p.Passphrase("STATE", 1, 1); err != ErrPromptTimeout {
		t.Fatalf("got %v, want ErrPromptTimeout", err)
	}
}

// TestPromptOnlyOtherIsTerminal: a console that is no terminal (a log file)
// does not stop the VT from being asked.
func TestPromptOnlyOtherIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vtM, vtS := openPTY(t)
	screen := answerOn(vtM, "only vt")
	got, err := (&Prompter{TTY: f, Others: []*os.File{vtS}, Timeout: 5 * time.Second}).Passphrase("STATE", 1, 1)
	if err != nil || string(got) != "only vt" {
		t.Fatalf("got %q, %v; want the VT's answer", got, err)
	}
	<-screen
}
