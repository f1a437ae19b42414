package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// readKeyFile reads a key (passphrase, volume key, signing key) as raw
// bytes from the file named by --flag, or from stdin when it is "-". Keys
// are never taken from the command line, so the flag is required; the
// caller zeroes the key after use.
func readKeyFile(cmd *cobra.Command, flag, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("--%s is required (keys are never taken from the command line)", flag)
	}
	b, err := readFileOrStdin(cmd, path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("--%s %s: empty key", flag, path)
	}
	return b, nil
}

// readFileOrStdin reads the file at path, or the command's stdin when path
// is "" or "-".
func readFileOrStdin(cmd *cobra.Command, path string) ([]byte, error) {
	if path == "" || path == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(path)
}

// openDevice opens an image file or block device, read-write when write,
// and returns its size.
func openDevice(path string, write bool) (*os.File, int64, error) {
	flag := os.O_RDONLY
	if write {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices, unlike Stat
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: size: %w", path, err)
	}
	return f, size, nil
}
