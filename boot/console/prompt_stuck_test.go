package console

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPromptStoppedTerminal: a terminal whose output is stopped (Scroll
// Lock on tty0, XOFF on a serial line) cannot hold the prompt: the
// question is written within the timeout, and the console still answers.
func TestPromptStoppedTerminal(t *testing.T) {
	conM, conS := openPTY(t)
	vtM, vtS := openPTY(t)
	if err := withFD(vtS, func(fd int) error { return unix.IoctlSetInt(fd, unix.TCXONC, unix.TCOOFF) }); err != nil {
		t.Fatalf("stop output: %v", err)
	}
	t.Cleanup(func() {
		// let a write the old code left blocked go
		withFD(vtS, func(fd int) error { return unix.IoctlSetInt(fd, unix.TCXONC, unix.TCOON) })
		vtM.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		vtM.Read(make([]byte, 4096))
	})
	screen := answerOn(conM, "tty pass")
	type result struct {
		pass []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		pass, err := (&Prompter{TTY: conS, Others: []*os.File{vtS}, Timeout: 200 * time.Millisecond}).Passphrase("STATE", 1, 1)
		done <- result{pass, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && !errors.Is(r.err, ErrPromptTimeout) {
			t.Fatalf("got %v, want the console's answer or ErrPromptTimeout", r.err)
		}
		if r.err == nil && string(r.pass) != "tty pass" {
			t.Fatalf("passphrase %q, want the console's", r.pass)
		}
	case <-time.After(time.Second):
		t.Fatal("the prompt hangs on the stopped terminal")
	}
	<-screen
}

// TestPromptBrokenOther: an extra terminal that cannot be set up (closed,
// hung up) does not stop the console's prompt.
func TestPromptBrokenOther(t *testing.T) {
	conM, conS := openPTY(t)
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	screen := answerOn(conM, "tty pass")
	got, err := (&Prompter{TTY: conS, Others: []*os.File{closed}, Timeout: 5 * time.Second}).Passphrase("STATE", 1, 1)
	if err != nil || string(got) != "tty pass" {
		t.Fatalf("got %q, %v; want the console's answer", got, err)
	}
	<-screen
}

// TestPromptDropsHalfTyped: text half typed on one terminal when the other
// answers (part of a passphrase) is not left for whatever reads that
// terminal next (a debug shell, a getty).
func TestPromptDropsHalfTyped(t *testing.T) {
	conM, conS := openPTY(t)
	vtM, vtS := openPTY(t)
	typed := make(chan struct{})
	go func() {
		defer close(typed)
		var all []byte
		buf := make([]byte, 512)
		vtM.SetReadDeadline(time.Now().Add(3 * time.Second))
		for !bytes.Contains(all, []byte("press Enter:")) {
			n, err := vtM.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				return
			}
		}
		vtM.Write([]byte("abc"))
		time.Sleep(100 * time.Millisecond) // into the line discipline
	}()
	go func() {
		<-typed
		var all []byte
		buf := make([]byte, 512)
		conM.SetReadDeadline(time.Now().Add(3 * time.Second))
		for !bytes.Contains(all, []byte("press Enter:")) {
			n, err := conM.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				return
			}
		}
		conM.Write([]byte("tty pass\n"))
	}()
	got, err := (&Prompter{TTY: conS, Others: []*os.File{vtS}, Timeout: 5 * time.Second}).Passphrase("STATE", 1, 1)
	if err != nil || string(got) != "tty pass" {
		t.Fatalf("got %q, %v; want the console's answer", got, err)
	}
	vtM.Write([]byte("\n"))
	vtS.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	n, err := vtS.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "\n" {
		t.Errorf("the VT's next reader got %q, want only the newline", buf[:n])
	}
}

// appendClearing never leaves an unzeroed copy behind when it grows.
func TestAppendClearing(t *testing.T) {
	line := make([]byte, 0, 4)
	line = appendClearing(line, []byte("abc"))
	old := line[:cap(line)]
	line = appendClearing(line, []byte("defgh"))
	if string(line) != "abcdefgh" {
		t.Fatalf("line %q", line)
	}
	for _, c := range old {
		if c != 0 {
			t.Fatalf("the old buffer still holds %q", old)
		}
	}
}
