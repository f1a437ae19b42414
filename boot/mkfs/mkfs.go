// Package mkfs makes the filesystem on a freshly formatted volume by running
// the mkfs.xfs or mkfs.ext4 shipped in the initramfs.
package mkfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Default is the filesystem of a volume whose config names none (as Talos).
const Default = "xfs"

// SearchPath is where the tools are looked for, in order.
func SearchPath() []string { return []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} }

// Runner runs a program and returns its combined output.
type Runner func(ctx context.Context, path string, args, env []string) ([]byte, error)

// Exec runs the program for real.
func Exec(ctx context.Context, path string, args, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	return cmd.CombinedOutput()
}

// Command returns the program, arguments and environment that make an
// fstype filesystem labelled label on dev. The volume is freshly formatted
// (its plaintext is noise), so the tools are told not to look for old
// signatures (-f, -F).
func Command(fstype, dev, label string) (prog string, args, env []string, err error) {
	env = []string{"PATH=" + strings.Join(SearchPath(), ":")}
	switch fstype {
	case "", "xfs":
		prog = "mkfs.xfs"
		args = []string{"-f", "-q"}
		if label != "" {
			args = append(args, "-L", truncate(label, 12))
		}
		// xfsprogs 6.1 refuses filesystems under 300 MB (STATE is 100 MiB)
		// unless it believes it runs in its own test suite.
		env = append(env, "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
	case "ext4":
		prog = "mkfs.ext4"
		args = []string{"-F", "-q"}
		if label != "" {
			args = append(args, "-L", truncate(label, 16))
		}
	default:
		return "", nil, nil, fmt.Errorf("mkfs: unsupported filesystem %q (want xfs or ext4)", fstype)
	}
	return prog, append(args, dev), env, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Find returns the full path of prog in SearchPath under root ("" or "/").
func Find(root, prog string) (string, error) {
	for _, d := range SearchPath() {
		p := filepath.Join(root, d, prog)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return filepath.Join(d, prog), nil
		}
	}
	return "", fmt.Errorf("mkfs: %s is not in the image (looked in %s)", prog, strings.Join(SearchPath(), ", "))
}

// Maker makes filesystems.
type Maker struct {
	Root string // "" in the initramfs; a directory in tests
	Run  Runner // nil: Exec
}

// Make creates an fstype filesystem on dev.
func (m Maker) Make(ctx context.Context, fstype, dev, label string) error {
	prog, args, env, err := Command(fstype, dev, label)
	if err != nil {
		return err
	}
	path, err := Find(m.Root, prog)
	if err != nil {
		return err
	}
	run := m.Run
	if run == nil {
		run = Exec
	}
	out, err := run(ctx, path, args, env)
	if err != nil {
		return fmt.Errorf("mkfs: %s %s: %w: %s", path, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
