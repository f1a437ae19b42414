package boot

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

func TestConsoleTTY(t *testing.T) {
	for _, tc := range []struct {
		active *string
		want   string
	}{
		{strPtr("tty0 ttyS0\n"), "ttyS0"}, // the last is /dev/console's
		{strPtr("ttyS0\n"), "ttyS0"},
		{strPtr("hvc0 tty0\n"), "tty0"},
		{strPtr("\n"), ""},
		{nil, ""}, // no sysfs entry
	} {
		sys := t.TempDir()
		if tc.active != nil {
			writeShellTestFile(t, filepath.Join(sys, "class/tty/console/active"), *tc.active, 0o644)
		}
		if got := consoleTTY(sys); got != tc.want {
			t.Errorf("active %q: consoleTTY = %q, want %q", strDeref(tc.active), got, tc.want)
		}
	}
}

func TestFindShell(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    []string
		dirs     []string
		wantPath string
		wantArgs []string
	}{
		{"dash as sh", []string{"bin/sh", "bin/busybox"}, nil, "/bin/sh", nil},
		{"busybox only", []string{"bin/busybox"}, nil, "/bin/busybox", []string{"sh"}},
		{"sh is a directory", []string{"bin/busybox"}, []string{"bin/sh"}, "/bin/busybox", []string{"sh"}},
		{"none", nil, nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				writeShellTestFile(t, filepath.Join(root, f), "#!/bin/true\n", 0o755)
			}
			for _, d := range tc.dirs {
				os.MkdirAll(filepath.Join(root, d), 0o755)
			}
			path, args, ok := findShell(root)
			if ok != (tc.wantPath != "") || path != tc.wantPath || !reflect.DeepEqual(args, tc.wantArgs) {
				t.Errorf("findShell = %q %q %v, want %q %q", path, args, ok, tc.wantPath, tc.wantArgs)
			}
		})
	}
}

func TestShellEnv(t *testing.T) {
	env := strings.Join(shellEnv(""), "\n")
	for _, want := range []string{"PATH=/sbin:/bin:/usr/sbin:/usr/bin", "HOME=/", "TERM=linux", "PS1=cryptinit# "} {
		if !strings.Contains(env, want+"\n") && !strings.HasSuffix(env, want) {
			t.Errorf("shell env lacks %q:\n%s", want, env)
		}
	}
}

type shellLog struct{ bytes.Buffer }

func (l *shellLog) Printf(format string, args ...any) { fmt.Fprintf(&l.Buffer, format+"\n", args...) }

func TestRunShellWithoutShell(t *testing.T) {
	var log shellLog
	if runShell(&log, t.TempDir(), t.TempDir(), t.TempDir()) {
		t.Error("runShell reported a shell in an empty root")
	}
	if !strings.Contains(log.String(), "no /bin/sh in the image") {
		t.Errorf("log: %q", log.String())
	}
}

// TestRunShellOnTerminal runs a stand-in /bin/sh on a pseudo-terminal named
// by a fake /sys/class/tty/console/active, as PID 1 does on ttyS0: the shell
// must get it as stdin, stdout, stderr and controlling terminal, with the
// debug environment, and runShell must return once it exits.
func TestRunShellOnTerminal(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		testenv.Missing(t, "no /bin/sh on this machine")
	}
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	slave.Close() // runShell opens it again by name

	root, sys := t.TempDir(), t.TempDir()
	// Reads a line typed on the terminal, proves /dev/tty (the controlling
	// terminal) is usable, and prints its environment.
	script := `#!/bin/sh
read typed
echo "typed=$typed"
if : </dev/tty 2>/dev/null; then echo ctty=yes; else echo ctty=no; fi
echo "env: $(env | sort | tr '\n' ' ')"
[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo stdio=tty
exit 3
`
	writeShellTestFile(t, filepath.Join(root, "bin/sh"), script, 0o755)
	name := strings.TrimPrefix(slave.Name(), "/dev/")
	writeShellTestFile(t, filepath.Join(sys, "class/tty/console/active"), "tty0 "+name+"\n", 0o644)

	if _, err := master.WriteString("hello-from-console\n"); err != nil {
		t.Fatal(err)
	}
	var log shellLog
	if !runShell(&log, root, sys, "/dev") {
		t.Fatalf("runShell reported no shell; log:\n%s", log.String())
	}
	out := readAll(master)
	for _, want := range []string{"typed=hello-from-console", "ctty=yes", "stdio=tty", "PATH=/sbin:/bin:/usr/sbin:/usr/bin", "PS1=cryptinit# ", "HOME=/"} {
		if !strings.Contains(out, want) {
			t.Errorf("shell output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "GOPATH=") || strings.Contains(out, "USER=") {
		t.Errorf("the shell inherited the caller's environment:\n%s", out)
	}
	l := log.String()
	for _, want := range []string{"on /dev/" + name, "exit or Ctrl-D", "reboots", "exited (status 3)"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
}

// openPTY opens a pseudo-terminal pair (posix_openpt, unlockpt, ptsname).
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

// readAll reads a pty master until the slave side is closed (EIO).
func readAll(master *os.File) string {
	var b bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := master.Read(buf)
		b.Write(buf[:n])
		if err != nil || n == 0 {
			return strings.ReplaceAll(b.String(), "\r\n", "\n")
		}
	}
}

func writeShellTestFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func strPtr(s string) *string { return &s }

func strDeref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}
