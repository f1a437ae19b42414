package vm

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Console collects a VM's serial output: it keeps all of it in memory for
// Expect, writes it to a log file, and streams complete lines to a logger.
type Console struct {
	mu     sync.Mutex
	buf    []byte
	cursor int // Expect searches from here
	closed bool
	notify chan struct{}
	log    io.Writer
	stream func(line string)
	line   []byte
}

func newConsole(logFile io.Writer, stream func(string)) *Console {
	return &Console{notify: make(chan struct{}), log: logFile, stream: stream}
}

// ansi matches the terminal escape sequences OVMF and systemd-boot print.
var ansi = regexp.MustCompile(`\x1b\[[0-9;=?]*[A-Za-z]|\r`)

// Write appends serial output (the console is QEMU's stdout).
func (c *Console) Write(p []byte) (int, error) {
	if c.log != nil {
		c.log.Write(p)
	}
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	var lines []string
	for _, b := range p {
		if b == '\n' {
			lines = append(lines, ansi.ReplaceAllString(string(c.line), ""))
			c.line = c.line[:0]
			continue
		}
		c.line = append(c.line, b)
	}
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
	if c.stream != nil {
		for _, l := range lines {
			c.stream(l)
		}
	}
	return len(p), nil
}

// close marks the end of output (QEMU exited): waiters stop waiting.
func (c *Console) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		close(c.notify)
	}
}

// Text is everything printed so far, escape sequences removed.
func (c *Console) Text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ansi.ReplaceAllString(string(c.buf), "")
}

// Tail is the last n lines of output, for failure messages.
func (c *Console) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(c.Text(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrConsoleClosed says the VM stopped before the expected output came.
var ErrConsoleClosed = fmt.Errorf("vm: console closed (QEMU exited)")

// Expect waits until one of the regular expressions matches a line printed
// after the previous Expect, and returns the index of the pattern and the line.
// Output up to the end of that line is consumed.
func (c *Console) Expect(timeout time.Duration, patterns ...string) (int, string, error) {
	return c.expect(timeout, false, patterns)
}

// ExpectPrompt is Expect that also matches the unfinished last line: a prompt
// waits for input without printing a newline. A match consumes all output.
func (c *Console) ExpectPrompt(timeout time.Duration, patterns ...string) (int, string, error) {
	return c.expect(timeout, true, patterns)
}

func (c *Console) expect(timeout time.Duration, partial bool, patterns []string) (int, string, error) {
	res := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		res[i] = regexp.MustCompile(p)
	}
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		text := c.buf[c.cursor:]
		// Only complete lines: a pattern must not match half a line.
		scanned := 0
		for {
			nl := indexByte(text[scanned:], '\n')
			if nl < 0 {
				break
			}
			line := ansi.ReplaceAllString(string(text[scanned:scanned+nl]), "")
			scanned += nl + 1
			for i, re := range res {
				if re.MatchString(line) {
					c.cursor += scanned
					c.mu.Unlock()
					return i, line, nil
				}
			}
		}
		if partial && scanned < len(text) {
			line := ansi.ReplaceAllString(string(text[scanned:]), "")
			for i, re := range res {
				if re.MatchString(line) {
					c.cursor += len(text)
					c.mu.Unlock()
					return i, line, nil
				}
			}
		}
		closed, notify := c.closed, c.notify
		c.mu.Unlock()
		if closed {
			return -1, "", ErrConsoleClosed
		}
		select {
		case <-notify:
		case <-deadline:
			return -1, "", fmt.Errorf("vm: none of %q within %s", patterns, timeout)
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// openLog creates the console log file.
func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
}
