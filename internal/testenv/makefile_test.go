package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The Makefile's side of the test net, run without building or booting
// anything: `make test` exports CRYPTINIT_STRICT=1, and `make test-vm` fails
// when no TestVM passed.
func TestMakefileTestNet(t *testing.T) {
	NeedTool(t, "make", "apt-get install make")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// a clean make environment: under `make test` itself the parent's
	// MAKEFLAGS and MAKELEVEL would make this make print "Entering directory"
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAKEFLAGS=") && !strings.HasPrefix(kv, "MAKELEVEL=") && !strings.HasPrefix(kv, "MFLAGS=") {
			env = append(env, kv)
		}
	}
	env = append(env, StrictEnv+"=", VMEnv+"=")

	// MAKE replaced so that test's recipe prints the variable instead of
	// running the suite (the rest of the line becomes a shell comment);
	// -o setup: do not run images/setup.sh.
	cmd := exec.Command("make", "-s", "--no-print-directory", "-C", root, "-o", "setup", "test", "MAKE=printenv "+StrictEnv+" #")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("make test: %s=%q, %v; want 1", StrictEnv, out, err)
	}

	// test-vm with a -run that matches nothing: go test passes, the check
	// must not. -o image: build nothing.
	cmd = exec.Command("make", "-C", root, "-o", "image", "test-vm", "VM_RUN=TestVMNoSuchTest", "VM_PKGS=./internal/testenv", "OUT="+t.TempDir())
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "test-vm: FAIL: no VM test ran") || !strings.Contains(string(out), "[no tests to run]") {
		t.Errorf("make test-vm with no VM test: %v\n%s", err, out)
	}
}
