// Package console is how cryptinit talks to the person at the machine: log
// lines on the console and in the kernel log, the passphrase prompt, and the
// failure banner.
//
// Console line formats (stable; the image harness and the demo match them):
//
//	cryptinit: +1.234s <message>          every step, with the time since init start
//	cryptinit: timeline {json}            a finished step (package boot/timeline)
//	cryptinit: FAIL <volume>: <reason> (tried: <slot> <kind>, ...)
//	                                      first line of the failure banner
//	cryptinit: Enter passphrase or recovery key for <volume> (try N of M, <timeout>), then press Enter:
//	cryptinit: switch_root <root> <init>  the last line before exec'ing the real init
package console

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Prefix starts every line cryptinit writes.
const Prefix = "cryptinit: "

// kmsgLevel is the syslog priority of our lines in the kernel log: facility
// user (1), level debug (7). Debug keeps the kernel from echoing them to the
// console a second time at the default loglevel; dmesg still shows them.
const kmsgLevel = "<15>"

// Logger writes each message to the console and to /dev/kmsg.
type Logger struct {
	start time.Time
	now   func() time.Time

	mu      sync.Mutex
	console io.Writer // nil: no console
	kmsg    io.Writer // nil: no kernel log
}

// NewLogger returns a logger whose times count from start. Either writer may
// be nil.
func NewLogger(start time.Time, console, kmsg io.Writer) *Logger {
	return &Logger{start: start, now: time.Now, console: console, kmsg: kmsg}
}

// SetOutputs replaces the writers (the console and /dev/kmsg only exist after
// devtmpfs is mounted).
func (l *Logger) SetOutputs(console, kmsg io.Writer) {
	l.mu.Lock()
	l.console, l.kmsg = console, kmsg
	l.mu.Unlock()
}

// Mute keeps lines off the console (they still go to /dev/kmsg) until the
// returned function is called: while a debug shell owns the console, a
// module finishing in the background must not write over its prompt.
func (l *Logger) Mute() (unmute func()) {
	l.mu.Lock()
	saved := l.console
	l.console = nil
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		l.console = saved
		l.mu.Unlock()
	}
}

// Since is the time elapsed since init start.
func (l *Logger) Since() time.Duration { return l.now().Sub(l.start) }

// Printf logs one message, prefixed with the time since init start. A message
// with several lines is logged line by line.
func (l *Logger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	stamp := fmt.Sprintf("+%.3fs ", l.Since().Seconds())
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		b.WriteString(Prefix + stamp + line + "\n")
	}
	l.write(b.String())
}

// Raw writes lines exactly as given (each gets the "cryptinit: " prefix but
// no time stamp): timeline lines and the banner.
func (l *Logger) Raw(lines ...string) {
	var b strings.Builder
	for _, line := range lines {
		if !strings.HasPrefix(line, Prefix) {
			line = Prefix + line
		}
		b.WriteString(line + "\n")
	}
	l.write(b.String())
}

// Write makes Logger an io.Writer (for the standard log package, which u-root
// uses during switch_root).
func (l *Logger) Write(p []byte) (int, error) {
	l.Printf("%s", p)
	return len(p), nil
}

func (l *Logger) write(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.console != nil {
		io.WriteString(l.console, s)
	}
	if l.kmsg != nil {
		// /dev/kmsg takes one record per write.
		for _, line := range strings.SplitAfter(s, "\n") {
			if line != "" {
				io.WriteString(l.kmsg, kmsgLevel+line)
			}
		}
	}
}
