package boot

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cryptinit/cryptinit/boot/console"
)

// The debug shell (cryptinit.debug=shell) runs only after a failed boot,
// never on success: a shell on the console of a node whose volumes are open
// would hand their contents to anyone at the console. images/build.sh ships
// Debian's dash as /bin/sh; busybox is a fallback for custom images.

// debugShells are the shells looked for, in order, under the initramfs root.
var debugShells = []string{"/bin/sh", "/bin/busybox"}

// shellEnv is the debug shell's whole environment: PID 1 has almost none, and
// a shell needs PATH to find mkfs and the like, HOME for cd, and TERM for
// line editing on a serial console.
func shellEnv(term string) []string {
	if term == "" {
		term = "linux"
	}
	return []string{
		"PATH=/sbin:/bin:/usr/sbin:/usr/bin",
		"HOME=/",
		"SHELL=/bin/sh",
		"TERM=" + term,
		"PS1=cryptinit# ",
	}
}

// findShell returns the first debug shell present under root and the
// arguments it needs ("sh" for a busybox binary).
func findShell(root string) (path string, args []string, ok bool) {
	for _, sh := range debugShells {
		if st, err := os.Stat(filepath.Join(root, sh)); err != nil || st.IsDir() {
			continue
		}
		if filepath.Base(sh) == "busybox" {
			return sh, []string{"sh"}, true
		}
		return sh, nil, true
	}
	return "", nil, false
}

// consoleTTY names the terminal behind /dev/console from sysfs: the kernel
// lists the active consoles with the one /dev/console writes to last
// ("tty0 ttyS0"). The shell needs the real terminal: the kernel never makes
// /dev/console a controlling terminal, and without one Ctrl-C would not
// reach the command the operator runs. "" when sysfs does not say.
func consoleTTY(sys string) string {
	b, err := os.ReadFile(filepath.Join(sys, "class", "tty", "console", "active"))
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// shellCommand makes the debug shell's command on tty: a new session with
// tty as controlling terminal (ctty), stdin, stdout and stderr.
func shellCommand(path string, args []string, tty *os.File, ctty bool, term string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.Env = shellEnv(term)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: ctty, Ctty: 0}
	return cmd
}

// openConsoleTTY opens the terminal behind /dev/console read-write, or
// /dev/console itself when sysfs does not name one. ctty says whether the
// file can become a controlling terminal.
func openConsoleTTY(sys, dev string) (f *os.File, name string, ctty bool, err error) {
	if name = consoleTTY(sys); name != "" {
		if f, err = os.OpenFile(filepath.Join(dev, name), os.O_RDWR, 0); err == nil {
			return f, name, true, nil
		}
	}
	f, err = os.OpenFile(filepath.Join(dev, "console"), os.O_RDWR, 0)
	return f, "console", false, err
}

// shellLogger is the part of console.Logger runShell uses.
type shellLogger interface {
	Printf(format string, args ...any)
}

// guardedShell runs the debug shell (run) only once lockdown has taken back
// what the boot opened (Boot.Lockdown); when lockdown fails it says why and
// runs no shell. It reports whether a shell ran.
func guardedShell(logger shellLogger, lockdown func() error, run func() bool) bool {
	logger.Printf("debug shell: closing what the boot opened first")
	if err := lockdown(); err != nil {
		logger.Printf("debug shell: refused, as the boot could not close everything it opened (see above); rebooting as without cryptinit.debug=shell")
		return false
	}
	return run()
}

// lockdownFor is the lockdown before the debug shell: b's, or when the boot
// failed before b was made, one that only extends the PCRs.
func lockdownFor(b *Boot, logger *console.Logger) error {
	if b == nil {
		b = &Boot{Root: "/", Log: logger}
		if m, _ := openTPM(logger); m != nil {
			b.Measurer = tpmMeasurer{m}
		}
	}
	return b.Lockdown()
}

// runShell runs the debug shell on the console and returns when the
// operator leaves it. It reports whether a shell ran.
func runShell(logger shellLogger, root, sys, dev string) bool {
	path, args, ok := findShell(root)
	if !ok {
		logger.Printf("debug shell: no /bin/sh in the image (images/build.sh ships dash as /bin/sh)")
		return false
	}
	tty, name, ctty, err := openConsoleTTY(sys, dev)
	if err != nil {
		logger.Printf("debug shell: open the console: %v", err)
		return false
	}
	defer tty.Close()
	term := "linux"
	if strings.HasPrefix(name, "ttyS") || strings.HasPrefix(name, "hvc") || name == "console" {
		term = "vt100" // serial consoles: no Linux-console escapes
	}
	logger.Printf("debug shell: %s on /dev/%s; the boot failed (see the banner above)", path, name)
	logger.Printf("debug shell: dash builtins and mkfs only (no cat, ls): echo /dev/* lists a directory,")
	logger.Printf(`debug shell:   while read -r l; do echo "$l"; done </proc/cmdline shows a file`)
	logger.Printf("debug shell: type exit or Ctrl-D to leave it: the machine then reboots")
	unmute := func() {}
	if m, ok := logger.(interface{ Mute() func() }); ok {
		unmute = m.Mute() // the shell owns the console; lines still reach dmesg
	}
	exe := filepath.Join(root, path)
	cmd := shellCommand(exe, args, tty, ctty, term)
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) && ctty {
		// The terminal could not become the controlling one: a shell
		// without job control beats none.
		logger.Printf("debug shell: %v; retrying without a controlling terminal", err)
		cmd = shellCommand(exe, args, tty, false, term)
		err = cmd.Run()
	}
	unmute()
	if err != nil && !errors.As(err, &exit) {
		logger.Printf("debug shell: %v", err)
		return false
	}
	logger.Printf("debug shell: exited (%s)", exitNote(cmd))
	return true
}

func exitNote(cmd *exec.Cmd) string {
	if cmd.ProcessState == nil {
		return "not started"
	}
	return fmt.Sprintf("status %d", cmd.ProcessState.ExitCode())
}
