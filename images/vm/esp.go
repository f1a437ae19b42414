package vm

import (
	"fmt"
	"os"
	"os/exec"
)

// ESPFile is one file to put on an EFI system partition.
type ESPFile struct {
	Src  string // host path
	Dest string // path on the ESP, e.g. /EFI/BOOT/BOOTX64.EFI
}

// CreateESP writes a FAT image of sizeMiB at path holding files (mkfs.vfat + mtools,
// no loop devices). Parent directories are made as needed.
func CreateESP(path string, sizeMiB int, files []ESPFile) error {
	os.Remove(path)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(sizeMiB) * MiB); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if out, err := exec.Command("mkfs.vfat", "-n", "ESP", path).CombinedOutput(); err != nil {
		return fmt.Errorf("vm: mkfs.vfat %s: %w: %s", path, err, out)
	}
	made := map[string]bool{}
	for _, file := range files {
		var dirs []string
		for d := parentDir(file.Dest); d != "/" && d != ""; d = parentDir(d) {
			if !made[d] {
				dirs = append([]string{d}, dirs...)
				made[d] = true
			}
		}
		for _, d := range dirs {
			if err := mtools("mmd", "-i", path, "::"+d); err != nil {
				return err
			}
		}
		if err := mtools("mcopy", "-i", path, file.Src, "::"+file.Dest); err != nil {
			return err
		}
	}
	return nil
}

func parentDir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

func mtools(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vm: %s %v: %w: %s", name, args, err, out)
	}
	return nil
}
