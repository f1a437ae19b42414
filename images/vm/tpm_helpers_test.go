package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/cryptinit/cryptinit/tpm"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// partitionReader reads one partition of a test disk (for luks2.ReadHeader).
type partitionReader struct {
	d     *Disk
	label string
}

func (p partitionReader) ReadAt(b []byte, off int64) (int, error) {
	if err := p.d.ReadAt(p.label, b, off); err != nil {
		return 0, err
	}
	return len(b), nil
}

// luksHeader reads the LUKS2 header of a partition on the host.
func luksHeader(t *testing.T, d *Disk, label string) *luks2.Header {
	t.Helper()
	h, err := luks2.ReadHeader(partitionReader{d, label})
	if err != nil {
		t.Fatalf("%s on %s: %v", label, d.Path, err)
	}
	return h
}

// tokensAndSlots renders a header's keyslot numbers and its tokens' raw JSON,
// to compare a volume's enrollment before and after a boot.
func tokensAndSlots(h *luks2.Header) string {
	var b strings.Builder
	var ids []int
	for id := range h.Keyslots {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "slot %d %+v\n", id, h.Keyslots[id])
	}
	ids = ids[:0]
	for id := range h.Tokens {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "token %d %s\n", id, h.Tokens[id].Raw)
	}
	return b.String()
}

// buildProbe builds images/cmd/tpmprobe, static, into the test's directory
// (the Go build cache makes every build after the first quick).
func buildProbe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tpmprobe")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/cryptinit/cryptinit/images/cmd/tpmprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build tpmprobe: %v\n%s", err, out)
	}
	return bin
}

// useProbeRoot gives the node a real root that runs tpmprobe (and the
// current images/root/init), with files (name -> content) in /etc/tpmprobe.
func useProbeRoot(t *testing.T, n *Node, files map[string][]byte) {
	t.Helper()
	probe := buildProbe(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "root.ext4")
	if err := copyFile(n.A.RootFS, img); err != nil {
		t.Fatal(err)
	}
	cmds := []string{
		"cd /sbin", "rm init", "", // write init, below
		"sif /sbin/init mode 0100755",
		"write " + probe + " tpmprobe", "sif /sbin/tpmprobe mode 0100755",
		"mkdir /etc/tpmprobe", "cd /etc/tpmprobe",
	}
	init, err := filepath.Abs(filepath.Join("..", "root", "init"))
	if err != nil {
		t.Fatal(err)
	}
	cmds[2] = "write " + init + " init"
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		src := filepath.Join(dir, name)
		if err := os.WriteFile(src, files[name], 0o644); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, "write "+src+" "+name)
	}
	script := filepath.Join(dir, "debugfs.cmd")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-w", "-f", script, img).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("ould not")) || bytes.Contains(out, []byte("No free space")) {
		t.Fatalf("debugfs on %s: %v\n%s", img, err, out)
	}
	root, err := CreateDisk(filepath.Join(dir, "root.img"), []Partition{{Label: "ROOT", Size: 16 * MiB, Fill: FillFrom(img)}})
	if err != nil {
		t.Fatal(err)
	}
	n.rootDisk = root.Path
}

// rootSays returns the first CRYPTINIT-ROOT line matching pattern, or fails.
func rootSays(t *testing.T, vm *VM, pattern string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + RootLinePrefix + pattern).FindStringSubmatch(vm.Console.Text())
	if m == nil {
		t.Errorf("the real root never said %q in %s", pattern, vm.Log)
	}
	return m
}

// predictPCR11 predicts PCR 11 for the UKI at path after phases.
func predictPCR11(t *testing.T, path string, phases ...tpm.Phase) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, _, err := tpm.PredictPCR11(f, phases...)
	if err != nil {
		t.Fatalf("predict PCR 11 of %s: %v", path, err)
	}
	return v
}
