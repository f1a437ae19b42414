// Package testenv decides what a test does when something it needs is not
// on the machine: a tool (cryptsetup, mkfs, swtpm, qemu), the TPM simulator
// or a built artifact. On a developer's machine the test skips; where a
// missing thing means a broken setup it fails, so that CI cannot pass by
// skipping:
//
//   - CRYPTINIT_STRICT=1 (set by `make test` and .ci/run): every missing
//     tool or artifact fails the test;
//   - CRYPTINIT_VM=1 (the VM tests were asked for): the same, and a VM test
//     that cannot boot fails.
//
// Skips that are not about a missing thing (-short, an opt-in test not
// asked for) stay skips. Like net/http/httptest it is for tests only, and
// it imports nothing from the project, so any package's tests can use it.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Environment variables that turn missing tools into failures.
const (
	StrictEnv = "CRYPTINIT_STRICT"
	VMEnv     = "CRYPTINIT_VM"
)

// Strict reports whether a missing tool or artifact fails tests
// (CRYPTINIT_STRICT=1).
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// VM reports whether the VM tests were asked for (CRYPTINIT_VM=1).
func VM() bool { return os.Getenv(VMEnv) == "1" }

// Missing ends tb because something it needs is missing: a failure under
// CRYPTINIT_STRICT=1 or CRYPTINIT_VM=1, else a skip. msg says what is
// missing and what installs it.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	switch {
	case Strict():
		tb.Fatalf("%s (%s=1: a missing tool or artifact is a failure, not a skip)", msg, StrictEnv)
	case VM():
		tb.Fatalf("%s (%s=1: a VM test that cannot run is a failure, not a skip)", msg, VMEnv)
	}
	tb.Skip(msg)
}

// MissingForVM ends a VM test that cannot boot: a failure when the VM tests
// were asked for (CRYPTINIT_VM=1), else a skip, whatever CRYPTINIT_STRICT
// says (`make test-unit` does not ask for VMs).
func MissingForVM(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if VM() {
		tb.Fatalf("%s (%s=1: a VM test that cannot run is a failure, not a skip)", msg, VMEnv)
	}
	tb.Skip(msg)
}

// Have reports whether tool is in PATH, for a test that runs without it but
// then checks less (a cross-check against the real tool). A missing tool is
// a failure of tb under CRYPTINIT_STRICT=1 or CRYPTINIT_VM=1, so a check is
// never dropped silently in CI; elsewhere it is logged.
func Have(tb testing.TB, tool string) bool {
	tb.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if Strict() || VM() {
			tb.Errorf("%s not installed, so this test checks less: %v (%s=1 or %s=1: a missing tool is a failure)", tool, err, StrictEnv, VMEnv)
		} else {
			tb.Logf("%s not installed: its cross-checks are left out", tool)
		}
		return false
	}
	return true
}

// NeedTool returns the path of tool in PATH, or ends tb through Missing
// with hint (what installs it).
func NeedTool(tb testing.TB, tool, hint string) string {
	tb.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Missing(tb, "%s not installed (%s): %v", tool, hint, err)
	}
	return p
}
