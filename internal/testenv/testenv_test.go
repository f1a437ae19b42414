package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissing runs this test binary again as a child per mode and reads
// what Missing did there: it cannot fail or skip this test itself.
func TestMissing(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		switch os.Getenv("TESTENV_FUNC") {
		case "Missing":
			Missing(t, "frobtool not installed")
		case "MissingForVM":
			MissingForVM(t, "no kernel to boot")
		case "NeedTool":
			NeedTool(t, "no-such-tool-cryptinit", "apt-get install nothing")
		case "Have":
			if Have(t, "no-such-tool-cryptinit") {
				t.Fatal("Have found a tool that does not exist")
			}
			t.Skip("Have returned false") // so that a non-failing Have reads as SKIP
		}
		t.Log("CHILD-CONTINUED")
		return
	}
	tests := []struct {
		fn, strict, vm string
		want           string // "SKIP" or "FAIL"
	}{
		{"Missing", "", "", "SKIP"},
		{"Missing", "1", "", "FAIL"},
		{"Missing", "", "1", "FAIL"},
		{"Missing", "0", "", "SKIP"},
		{"NeedTool", "", "", "SKIP"},
		{"NeedTool", "1", "", "FAIL"},
		{"Have", "", "", "SKIP"},
		{"Have", "1", "", "FAIL"},
		{"Have", "", "1", "FAIL"},
		{"MissingForVM", "", "", "SKIP"},
		{"MissingForVM", "1", "", "SKIP"},
		{"MissingForVM", "", "1", "FAIL"},
	}
	for _, tt := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissing$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "TESTENV_FUNC="+tt.fn, StrictEnv+"="+tt.strict, VMEnv+"="+tt.vm)
		out, err := cmd.CombinedOutput()
		got := "PASS"
		switch {
		case strings.Contains(string(out), "--- FAIL: TestMissing"):
			got = "FAIL"
		case strings.Contains(string(out), "--- SKIP: TestMissing"):
			got = "SKIP"
		}
		if got != tt.want || strings.Contains(string(out), "CHILD-CONTINUED") || (got == "FAIL") != (err != nil) {
			t.Errorf("%s with %s=%q %s=%q: %s (exit %v), want %s\n%s", tt.fn, StrictEnv, tt.strict, VMEnv, tt.vm, got, err, tt.want, out)
		}
	}
}
