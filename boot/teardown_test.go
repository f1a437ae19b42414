package boot

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// shellNode is a node whose mounts, mappings, PCR extensions and debug
// shell all write to one event list, so a test sees their order; it fails
// the unmount of failUnmount (a staging or new-root path) when set.
type shellNode struct {
	*node
	mu          sync.Mutex
	events      []string
	failUnmount string
}

func (s *shellNode) event(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *shellNode) Unmount(target string) error {
	if target == s.failUnmount {
		s.event("unmount-failed " + target)
		return errors.New("device or resource busy")
	}
	s.event("unmount " + target)
	return nil
}

func (s *shellNode) Unmap(name string) error {
	s.event("unmap " + name)
	return nil
}

func (s *shellNode) MeasurePhase(p string) error {
	s.event("pcr11 " + p)
	return nil
}

func (s *shellNode) LatchVolumeKey(id string, key []byte) error {
	s.event("pcr15 " + id)
	return nil
}

// stateOpensThenFails opens STATE with a tpm-like key and fails EPHEMERAL:
// a boot that leaves STATE mounted and mapped and a key copy for the latch.
type stateOpensThenFails struct{}

func (stateOpensThenFails) Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error) {
	if vol.ID != config.StateVolume {
		return nil, &unlock.OpenError{Volume: vol.ID, Op: "open", Err: unlock.ErrNoKeyOpens,
			Attempts: []unlock.Attempt{{Slot: 0, Kind: "static", Err: keys.ErrWrongKey}}}
	}
	return (&kindUnlocker{kind: "tpm"}).Unlock(ctx, vol, dev, size)
}

// failedBoot runs a boot where STATE opens and EPHEMERAL fails, on a
// shellNode with its hardware fakes.
func failedBoot(t *testing.T) (*shellNode, *Boot, string) {
	t.Helper()
	n := newNode(t, standardParts())
	s := &shellNode{node: n}
	root := t.TempDir()
	b := n.boot(root, basicConfig, "cryptinit.debug=shell")
	b.Mapper, b.Mounter, b.Measurer = s, s, s
	b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return stateOpensThenFails{} }
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || f.Failure.Volume != config.EphemeralVolume {
		t.Fatalf("want EPHEMERAL's failure, got %v\n%s", err, n.con.String())
	}
	if !slices.Contains(s.events, "pcr15 "+config.StateVolume) {
		t.Fatalf("STATE was not latched as it opened: %v", s.events)
	}
	return s, b, root
}

// TestLockdownBeforeShell: a failed boot with cryptinit.debug=shell unmounts
// and unmaps STATE, extends PCR 11 with debug-shell and PCR 15, all before the shell starts, and says so on the console.
func TestLockdownBeforeShell(t *testing.T) {
	s, b, root := failedBoot(t)
	b.netDown = func() error { s.event("network down"); return nil } // as after a kms key
	s.events = nil
	ran := guardedShell(b.Log, b.Lockdown, func() bool { s.event("shell"); return true })
	if !ran {
		t.Fatalf("no shell; console:\n%s", s.con.String())
	}
	staging := filepath.Join(root, StagingDir, config.StateVolume)
	want := []string{"unmount " + staging, "unmap luks2-STATE", "network down", "pcr11 debug-shell", "pcr15 debug-shell", "shell"}
	if strings.Join(s.events, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(s.events, "\n"), strings.Join(want, "\n"))
	}
	con := s.con.String()
	for _, line := range []string{
		"debug shell: unmounted STATE (" + staging + ")",
		"debug shell: unmapped luks2-STATE (STATE)",
		"debug shell: network down",
		"debug shell: PCR 11 extended with debug-shell",
		"debug shell: PCR 15 latched (debug-shell)",
		"debug shell: no volume key kept",
	} {
		if !strings.Contains(con, line) {
			t.Errorf("console lacks %q:\n%s", line, con)
		}
	}
	if strings.Contains(con, "refused") {
		t.Errorf("console says refused:\n%s", con)
	}
}

// TestShellRefusedWhenLockdownFails: when STATE cannot be unmounted, the
// shell does not start and the console says why; the PCRs are still
// extended (the machine reboots without the shell).
func TestShellRefusedWhenLockdownFails(t *testing.T) {
	s, b, root := failedBoot(t)
	staging := filepath.Join(root, StagingDir, config.StateVolume)
	s.failUnmount = staging
	s.events = nil
	if guardedShell(b.Log, b.Lockdown, func() bool { s.event("shell"); return true }) {
		t.Error("the shell ran although STATE stayed mounted")
	}
	got := strings.Join(s.events, "\n")
	if slices.Contains(s.events, "shell") {
		t.Errorf("events: %s", got)
	}
	for _, e := range []string{"pcr11 debug-shell", "pcr15 debug-shell"} {
		if !strings.Contains(got, e) {
			t.Errorf("events lack %q: %s", e, got)
		}
	}
	con := s.con.String()
	for _, line := range []string{
		"debug shell: unmount STATE (" + staging + "): device or resource busy",
		"debug shell: refused",
		"rebooting as without cryptinit.debug=shell",
	} {
		if !strings.Contains(con, line) {
			t.Errorf("console lacks %q:\n%s", line, con)
		}
	}
}

// TestShellRefusedWithoutUnmap: a mapper that cannot remove mappings (or
// a PCR extension that fails) refuses the shell too.
func TestShellRefusedWithoutUnmap(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return stateOpensThenFails{} }
	b.Run(context.Background()) // n (the Mapper) has no Unmap
	ran := false
	if guardedShell(b.Log, b.Lockdown, func() bool { ran = true; return true }) || ran {
		t.Error("shell ran with luks2-STATE still mapped")
	}
	if !strings.Contains(n.con.String(), "unmap luks2-STATE (STATE): this boot's mapper cannot remove mappings") {
		t.Errorf("console:\n%s", n.con.String())
	}

	s, b2, _ := failedBoot(t)
	b2.Measurer = failingMeasurer{}
	if guardedShell(b2.Log, b2.Lockdown, func() bool { return true }) {
		t.Error("shell ran although PCR 11 could not be extended")
	}
	if !strings.Contains(s.con.String(), "extend PCR 11 with debug-shell: no TPM answer") {
		t.Errorf("console:\n%s", s.con.String())
	}
}

type failingMeasurer struct{}

func (failingMeasurer) MeasurePhase(string) error           { return errors.New("no TPM answer") }
func (failingMeasurer) LatchVolumeKey(string, []byte) error { return errors.New("no TPM answer") }

// TestLockdownAfterMoves: after a boot that got as far as moving the
// volumes into the new root, Lockdown unmounts children before parents
// (the new root last) and every mapping.
func TestLockdownAfterMoves(t *testing.T) {
	n := newNode(t, standardParts())
	s := &shellNode{node: n}
	root := t.TempDir()
	b := n.boot(root, basicConfig, "")
	b.Mapper, b.Mounter = s, s
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, n.con.String())
	}
	s.events = nil
	if err := b.Lockdown(); err != nil {
		t.Fatal(err)
	}
	var unmounts, unmaps []string
	for _, e := range s.events {
		if p, ok := strings.CutPrefix(e, "unmount "); ok {
			unmounts = append(unmounts, strings.TrimPrefix(p, root))
		} else if m, ok := strings.CutPrefix(e, "unmap "); ok {
			unmaps = append(unmaps, m)
		}
	}
	if got := strings.Join(unmounts, " "); got != "/sysroot/var/mnt/data /sysroot/system/state /sysroot/var /sysroot" {
		t.Errorf("unmounts: %s", got)
	}
	if len(unmaps) != 3 {
		t.Errorf("unmaps: %v", unmaps)
	}
	if !strings.Contains(n.con.String(), "debug shell: unmounted data") && !strings.Contains(n.con.String(), "debug shell: unmounted u-data") {
		t.Errorf("console:\n%s", n.con.String())
	}
	if !strings.Contains(n.con.String(), "debug shell: no TPM: PCR 11 and PCR 15 not extended") {
		t.Errorf("console:\n%s", n.con.String())
	}
}

// TestPanicInStateBecomesBanner: a panic while STATE unlocks, on the main
// goroutine, becomes STATE's banner (Run returns a *Fatal) instead of
// killing PID 1; so does one in a volume unlocked alongside STATE.
func TestPanicInStateBecomesBanner(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	b.NewUnlocker = func(keys.Env, *console.Logger) Unlocker { return panicUnlocker{} }
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || f.Failure.Volume != config.StateVolume || !strings.Contains(err.Error(), "crashed") || !strings.Contains(err.Error(), "engine bug") {
		t.Fatalf("got %v", err)
	}
	if f.Failure.Hint != crashHint {
		t.Errorf("hint %q", f.Failure.Hint)
	}
}

// TestPanicAnywhereInRunBecomesBanner: a panic outside any volume (here in
// the device finder) becomes a banner too.
func TestPanicAnywhereInRunBecomesBanner(t *testing.T) {
	n := newNode(t, standardParts())
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Devices = panicFinder{}
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) || !strings.Contains(err.Error(), "cryptinit crashed while booting: disk driver bug") {
		t.Fatalf("got %v", err)
	}
}

type panicFinder struct{}

func (panicFinder) Wait(context.Context, []string, time.Duration) (*devices.Found, error) {
	panic("disk driver bug")
}
