package vm

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Console patterns shared by scenarios (see images/README.md).
const (
	PatRootDone = `^` + RootLinePrefix + `done`
	PatFail     = `cryptinit: FAIL `
	PatPrompt   = `cryptinit: Enter passphrase`
)

// BootToRoot boots the node, waits until the real root has reported and
// powered off, and returns its report. A failure banner fails the test at once
// (with the console's end) instead of waiting for a timeout.
func (n *Node) BootToRoot(o BootOptions) (*VM, *RootReport) {
	n.t.Helper()
	vm := n.Boot(o)
	return vm, vm.RootReport()
}

// RootReport waits for the real root's report on a booted VM, then for QEMU
// to exit, and parses the report.
func (v *VM) RootReport() *RootReport {
	v.t.Helper()
	i, _ := v.Expect(BootTimeout, PatRootDone, PatFail)
	if i == 1 {
		// Let the banner finish before showing it.
		v.Console.Expect(5*time.Second, `^=+$`)
		v.Console.Expect(2*time.Second, `^=+$`)
		v.t.Fatalf("boot failed:\n%s\n(full log %s)", v.Console.Tail(40), v.Log)
	}
	elapsed := time.Since(v.started)
	v.Wait(BootTimeout)
	r, err := ParseRootReport(v.Console.Text())
	if err != nil {
		v.t.Fatal(err)
	}
	r.Elapsed = elapsed
	return r
}

// ExpectFailureAndReboot waits for the failure banner and for the VM to
// reboot (QEMU exits: -no-reboot), returning the banner's first line.
func (v *VM) ExpectFailureAndReboot() string {
	v.t.Helper()
	_, line := v.Expect(BootTimeout, PatFail)
	v.Wait(BootTimeout)
	return line
}

// TestConfig reads a harness config from images/testdata.
func TestConfig(t TB, name string) []byte {
	t.Helper()
	out, err := OutDir()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(out), "images", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RequireInit is Require plus a built cryptinit: scenarios boot the real init.
func RequireInit(t testing.TB) *Artifacts {
	t.Helper()
	a := Require(t)
	if !a.HasInit() {
		t.Fatalf("out/bin/cryptinit is missing: ./cmd/cryptinit did not build (see make image)")
	}
	return a
}

// ProjectConfig reads an example config from the project's configs/ folder.
func ProjectConfig(t TB, name string) []byte {
	t.Helper()
	out, err := OutDir()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(out), "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
