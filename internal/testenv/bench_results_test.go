package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchWritesResults: `make bench` ends by writing out/bench/results.md
// with images/bench/results.sh, which the README's "Measured" section
// quotes; the file names the date, CPU, vCPU count and commit, and has a row
// for every Go benchmark line and the KDF table.
func TestBenchWritesResults(t *testing.T) {
	NeedTool(t, "make", "apt-get install make")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "-n", "--no-print-directory", "-C", root, "-o", "setup", "-o", "image", "bench", "OUT=/x").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n bench: %v\n%s", err, out)
	}
	for _, want := range []string{"images/bench/kdf.sh /x 5", "images/bench/booster-sizes.sh /x >/x/bench/booster-sizes.md",
		"images/bench/results.sh /x/bench/go-bench.txt /x/bench/kdf.md /x/bench/booster-sizes.md >/x/bench/results.md"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make bench does not run %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	gb, kdf := filepath.Join(dir, "go-bench.txt"), filepath.Join(dir, "kdf.md")
	os.WriteFile(gb, []byte("pkg: github.com/cryptinit/cryptinit/unlock/luks2\nBenchmarkArgon2G-2   \t5\t  812.5 ns/op\t  3.0 ratio\nPASS\n"), 0o644)
	os.WriteFile(kdf, []byte("| argon2id 64 MiB t4 p4 | 0.10 / 0.20 | 0.50 | 0.90 | x | y | z |\n"), 0o644)
	sizes := filepath.Join(dir, "booster-sizes.md")
	os.WriteFile(sizes, []byte("| virtio (harness set) | booster | 30 | 27.52 | 8.73 | 9.51 | 6.93 |\n"), 0o644)
	cmd := exec.Command("bash", "images/bench/results.sh", gb, kdf, sizes)
	cmd.Dir = root
	res, err := cmd.Output()
	if err != nil {
		t.Fatalf("results.sh: %v", err)
	}
	for _, want := range []string{"- date: ", "- CPU: ", " vCPUs", "- commit: ", "| argon2id 64 MiB t4 p4 | 0.10 / 0.20 |", "| unlock/luks2 | BenchmarkArgon2G-2 | 812.5 ns/op, 3.0 ratio |",
		"## Initramfs sizes against booster", "| virtio (harness set) | booster | 30 | 27.52 | 8.73 | 9.51 | 6.93 |"} {
		if !strings.Contains(string(res), want) {
			t.Errorf("results.md lacks %q:\n%s", want, res)
		}
	}
}
