// Package cmdline parses the kernel command line that cryptinit reads as PID 1.
//
// Our own options live under the "cryptinit." prefix so they never collide with
// the kernel's or the real init's; the standard root=, rootfstype=, rootflags=,
// ro/rw, init=, ip= and console= keep their usual meaning. root= takes
// /dev/xxx, PARTLABEL=x, PARTUUID=x (GPT partition GUID) or UUID=x (ext2/3/4,
// xfs or FAT filesystem UUID), GUIDs in any case (boot/devices.Resolve).
//
//	cryptinit.config=SOURCE        machine config: /path (in the initramfs) or
//	                               DEVICE:/path, DEVICE being /dev/xxx,
//	                               PARTLABEL=x, PARTUUID=x or UUID=x, as for
//	                               root= (mounted read-only)
//	cryptinit.debug=shell          on failure, start /bin/sh instead of rebooting
//	cryptinit.wait=DURATION        how long to wait for partitions (default 30s)
//	cryptinit.reboot-delay=DUR     delay before rebooting after a failure (default 10s)
//	cryptinit.prompt-timeout=DUR   passphrase prompt timeout per try (default 60s; 0 = no prompt)
//	cryptinit.modules=a,b          extra kernel modules to load
//
// Durations take Go syntax ("1m30s", "500ms") or plain seconds ("30").
package cmdline

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every option that belongs to cryptinit.
const Prefix = "cryptinit."

// Defaults used when the command line says nothing.
const (
	DefaultWait          = 30 * time.Second
	DefaultRebootDelay   = 10 * time.Second
	DefaultPromptTimeout = 60 * time.Second
	DefaultInit          = "/sbin/init"
)

// Cmdline is what cryptinit understands of the kernel command line.
type Cmdline struct {
	Config        string        // cryptinit.config= source, empty when not given
	DebugShell    bool          // cryptinit.debug=shell
	Wait          time.Duration // cryptinit.wait=
	RebootDelay   time.Duration // cryptinit.reboot-delay=
	PromptTimeout time.Duration // cryptinit.prompt-timeout=
	Modules       []string      // cryptinit.modules=

	Root       string   // root=
	RootFSType string   // rootfstype=
	RootFlags  string   // rootflags=
	ReadOnly   bool     // ro (the last of ro/rw wins; default rw)
	Init       string   // init=, default /sbin/init
	IP         string   // ip=
	Consoles   []string // every console=

	// Warnings lists options we recognised as ours but could not use; the
	// caller logs them (a typo must not pass silently).
	Warnings []string
}

// Parse reads a kernel command line as found in /proc/cmdline.
func Parse(s string) Cmdline {
	c := Cmdline{
		Wait:          DefaultWait,
		RebootDelay:   DefaultRebootDelay,
		PromptTimeout: DefaultPromptTimeout,
		Init:          DefaultInit,
	}
	for _, f := range Fields(s) {
		key, val, hasVal := strings.Cut(f, "=")
		switch key {
		case "root":
			c.Root = val
		case "rootfstype":
			c.RootFSType = val
		case "rootflags":
			c.RootFlags = val
		case "ro":
			c.ReadOnly = true
		case "rw":
			c.ReadOnly = false
		case "init":
			if val != "" {
				c.Init = val
			}
		case "ip":
			c.IP = val
		case "console":
			c.Consoles = append(c.Consoles, val)
		case Prefix + "config":
			c.Config = val
		case Prefix + "debug":
			if val == "shell" {
				c.DebugShell = true
			} else {
				c.warn(key, val, `only "shell" is known`)
			}
		case Prefix + "wait":
			c.Wait = c.duration(key, val, c.Wait)
		case Prefix + "reboot-delay":
			c.RebootDelay = c.duration(key, val, c.RebootDelay)
		case Prefix + "prompt-timeout":
			c.PromptTimeout = c.duration(key, val, c.PromptTimeout)
		case Prefix + "modules":
			for _, m := range strings.Split(val, ",") {
				if m = strings.TrimSpace(m); m != "" {
					c.Modules = append(c.Modules, m)
				}
			}
		default:
			if strings.HasPrefix(key, Prefix) {
				c.Warnings = append(c.Warnings, fmt.Sprintf("unknown option %q ignored", f))
			}
			_ = hasVal
		}
	}
	return c
}

func (c *Cmdline) warn(key, val, why string) {
	c.Warnings = append(c.Warnings, fmt.Sprintf("%s=%q ignored: %s", key, val, why))
}

// duration parses a Go duration or a number of seconds; on bad input it keeps
// def and records a warning.
func (c *Cmdline) duration(key, val string, def time.Duration) time.Duration {
	if secs, err := strconv.ParseFloat(val, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second))
	}
	d, err := time.ParseDuration(val)
	if err != nil || d < 0 {
		c.warn(key, val, "want a duration such as 30s or 1m, keeping "+def.String())
		return def
	}
	return d
}

// Fields splits a command line into options the way the kernel does: spaces
// separate options, double quotes group (and are removed), as in
// `console="ttyS0,115200" foo="a b"`.
func Fields(s string) []string {
	var out []string
	var b strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if have {
				out = append(out, b.String())
				b.Reset()
				have = false
			}
		default:
			b.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, b.String())
	}
	return out
}
