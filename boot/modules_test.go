package boot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/modules"
)

// fakeModules is a ModuleLoader whose stages hold one module each, that
// records what it loaded and can hold the filesystem stage back until the
// boot has reached the device wait.
type fakeModules struct {
	stages  map[modules.Stage][]string
	fail    map[string]error
	holdFS  chan struct{} // closed: the filesystem stage may finish
	mu      sync.Mutex
	loaded  map[string]bool
	order   []string
	timeout bool // the filesystem stage was still held after 5 s
}

func newFakeModules() *fakeModules {
	return &fakeModules{
		stages: map[modules.Stage][]string{
			modules.StageDevices:     {"virtio_blk"},
			modules.StageMapping:     {"dm_crypt"},
			modules.StageFilesystems: {"xfs", "ext4"},
			modules.StageNetwork:     {"virtio_net"},
		},
		fail:   map[string]error{},
		holdFS: make(chan struct{}),
		loaded: map[string]bool{},
	}
}

func (f *fakeModules) Stage(s modules.Stage) []string { return f.stages[s] }

func (f *fakeModules) LoadAll(names []string) []modules.Result {
	var res []modules.Result
	for _, n := range names {
		n = strings.TrimPrefix(n, "fs-") // the alias a filesystem type loads by
		if n == "xfs" {
			select {
			case <-f.holdFS:
				time.Sleep(100 * time.Millisecond) // a big module takes a while
			case <-time.After(5 * time.Second):
				f.mu.Lock()
				f.timeout = true
				f.mu.Unlock()
			}
		}
		err := f.fail[n]
		f.mu.Lock()
		f.order = append(f.order, n)
		if err == nil {
			f.loaded[n] = true
		}
		f.mu.Unlock()
		if err != nil {
			err = fmt.Errorf("load %s: %w", n, err)
		}
		res = append(res, modules.Result{Name: n, Err: err})
	}
	return res
}

func (f *fakeModules) Load(name string) error { return f.LoadAll([]string{name})[0].Err }

func (f *fakeModules) Slowest(int) []modules.Timing { return nil }

func (f *fakeModules) isLoaded(n string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loaded[n]
}

// kernelNode is the fake node with kernel rules: a filesystem mounts only
// once its module is loaded, dm-crypt maps only once dm_crypt is, and the
// partitions only show up once the disk driver is. The filesystem modules
// finish only after the first dm-crypt mapping (STATE's, after its KDF),
// so a boot that waited for them before the devices or the KDF would
// stall, and one that mounted without waiting would fail.
type kernelNode struct {
	*node
	mods *fakeModules
	once sync.Once
	bad  []string // rule violations
	mu   sync.Mutex
}

func (k *kernelNode) violation(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	k.mu.Lock()
	k.bad = append(k.bad, err.Error())
	k.mu.Unlock()
	return err
}

func (k *kernelNode) Wait(ctx context.Context, required []string, timeout time.Duration) (*devices.Found, error) {
	if !k.mods.isLoaded("virtio_blk") {
		return nil, k.violation("device wait before the disk driver was loaded")
	}
	return k.node.Wait(ctx, required, timeout)
}

func (k *kernelNode) Map(spec dmcrypt.Spec) (string, error) {
	if !k.mods.isLoaded("dm_crypt") {
		return "", k.violation("map %s before dm_crypt was loaded", spec.Name)
	}
	k.once.Do(func() { close(k.mods.holdFS) })
	return k.node.Map(spec)
}

func (k *kernelNode) Mount(source, target, fstype string, flags uintptr, data string) error {
	if fstype != "" && !k.mods.isLoaded(fstype) { // "": a move
		return errors.New("no such device") // what mount(2) says for an unknown filesystem type
	}
	return k.node.Mount(source, target, fstype, flags, data)
}

func TestModulesLoadOffTheCriticalPath(t *testing.T) {
	n := newNode(t, standardParts())
	mods := newFakeModules()
	k := &kernelNode{node: n, mods: mods}
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Devices, b.Mapper, b.Mounter, b.Modules = k, k, k, mods
	b.EarlyFS = []string{"efivarfs"}
	lowered := 0
	b.LowerPriority = func() error { lowered++; return errors.New("not permitted") }
	afterAt := -1
	b.AfterModules = func() {
		mods.mu.Lock()
		afterAt = len(mods.order)
		mods.mu.Unlock()
	}
	if _, err := b.Run(context.Background()); err != nil {
		t.Fatalf("boot: %v\n%s", err, n.con.String())
	}
	if len(k.bad) > 0 {
		t.Errorf("kernel rules broken: %v", k.bad)
	}
	if mods.timeout {
		t.Errorf("the filesystem modules were awaited before STATE's dm-crypt mapping (device wait or KDF)")
	}
	if got := strings.Join(mods.order, " "); got != "virtio_blk efivarfs dm_crypt xfs ext4" {
		t.Errorf("load order %q, want devices, early mounts, mapping, filesystems and no network", got)
	}
	if lowered != 1 || !strings.Contains(n.con.String(), "modules: lower the background priority: not permitted") {
		t.Errorf("background priority lowered %d times (want 1), its failure not logged", lowered)
	}
	if afterAt != 2 {
		t.Errorf("AfterModules ran after %d loads, want right after the early mounts' modules (2)", afterAt)
	}
	if len(n.mounts) < 4 {
		t.Errorf("mounts %v", n.mounts)
	}
	steps := map[string]bool{}
	for _, s := range b.Timeline.Steps() {
		steps[s.Name] = true
	}
	for _, want := range []string{"modules", "modules-background", "devices", "mount"} {
		if !steps[want] {
			t.Errorf("timeline has no %q step", want)
		}
	}
	if steps["modules-network"] {
		t.Errorf("network modules loaded without a kms key")
	}
}

func TestFilesystemModuleFailureBanner(t *testing.T) {
	n := newNode(t, standardParts())
	mods := newFakeModules()
	close(mods.holdFS)
	mods.fail["xfs"] = errors.New("key was rejected by service")
	k := &kernelNode{node: n, mods: mods, once: sync.Once{}}
	k.once.Do(func() {}) // holdFS is closed already
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Devices, b.Mapper, b.Mounter, b.Modules = k, k, k, mods
	_, err := b.Run(context.Background())
	var f *Fatal
	if !errors.As(err, &f) {
		t.Fatalf("want a *Fatal, got %v\n%s", err, n.con.String())
	}
	if f.Failure.Volume != "STATE" {
		t.Errorf("failure names %q, want STATE", f.Failure.Volume)
	}
	msg := f.Failure.Reason.Error()
	if !strings.Contains(msg, "(xfs): no such device") || !strings.Contains(msg, "the xfs module did not load: load xfs: key was rejected by service") {
		t.Errorf("reason does not name the module and why: %s", msg)
	}
	if !strings.Contains(f.Failure.Hint, "filesystem module") {
		t.Errorf("hint %q does not point at the filesystem module", f.Failure.Hint)
	}
	if !strings.Contains(n.con.String(), "modules: xfs: load xfs: key was rejected by service") {
		t.Errorf("console does not count the failed module:\n%s", n.con.String())
	}
}

func TestNetworkModulesOnlyForKMS(t *testing.T) {
	n := newNode(t, standardParts())
	mods := newFakeModules()
	close(mods.holdFS)
	b := n.boot(t.TempDir(), basicConfig, "")
	b.Modules = mods
	b.startModules(context.Background())
	b.awaitModules(context.Background(), modules.StageFilesystems, "")
	if mods.isLoaded("virtio_net") {
		t.Fatal("network modules loaded before any kms key asked for the network")
	}
	net := &driverNetwork{mods: mods}
	b.Network = net
	if err := b.ensureNetwork(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !net.driverLoaded {
		t.Error("network modules not loaded before the network came up")
	}
}

// driverNetwork is a Network that notes whether the NIC driver was loaded
// when it was brought up.
type driverNetwork struct {
	mods         *fakeModules
	driverLoaded bool
}

func (d *driverNetwork) Up(context.Context) (func() error, error) {
	d.driverLoaded = d.mods.isLoaded("virtio_net")
	return func() error { return nil }, nil
}

// A boot loads the modules of the filesystem types it mounts, not every
// filesystem shipped: with xfs volumes and an xfs root, ext4 (with its
// libraries, ~0.3 s of CPU under TCG) stays unloaded.
func TestOnlyFilesystemsInUseLoad(t *testing.T) {
	for _, tc := range []struct {
		rootFS   string
		wantExt4 bool
	}{
		{"xfs", false},
		{"ext4", true},
	} {
		t.Run("root "+tc.rootFS, func(t *testing.T) {
			n := newNode(t, standardParts())
			mods := newFakeModules()
			close(mods.holdFS)
			k := &kernelNode{node: n, mods: mods}
			k.once.Do(func() {})
			b := n.boot(t.TempDir(), basicConfig, "rootfstype="+tc.rootFS)
			b.Devices, b.Mapper, b.Mounter, b.Modules = k, k, k, mods
			if _, err := b.Run(context.Background()); err != nil {
				t.Fatalf("boot: %v\n%s", err, n.con.String())
			}
			if len(k.bad) > 0 {
				t.Errorf("kernel rules broken: %v", k.bad)
			}
			if !mods.isLoaded("xfs") {
				t.Error("xfs not loaded for the xfs volumes")
			}
			if got := mods.isLoaded("ext4"); got != tc.wantExt4 {
				t.Errorf("ext4 loaded = %v, want %v (load order %v)", got, tc.wantExt4, mods.order)
			}
		})
	}
}

// With two CPUs or more, the prefetched filesystems load side by side on
// background threads of their own, each with a lowered priority; with one
// they load one after the other on the one background thread.
func TestFilesystemsLoadSideBySide(t *testing.T) {
	for _, tc := range []struct{ cpus, wantLowered int }{{1, 1}, {2, 2}} {
		n := newNode(t, standardParts())
		mods := newFakeModules()
		close(mods.holdFS)
		b := n.boot(t.TempDir(), basicConfig, "") // xfs volumes, ext4 root
		b.Modules, b.CPUs = mods, tc.cpus
		var mu sync.Mutex
		lowered := 0
		b.LowerPriority = func() error { mu.Lock(); lowered++; mu.Unlock(); return nil }
		if _, err := b.Run(context.Background()); err != nil {
			t.Fatalf("%d CPUs: boot: %v\n%s", tc.cpus, err, n.con.String())
		}
		mu.Lock()
		got := lowered
		mu.Unlock()
		if got != tc.wantLowered {
			t.Errorf("%d CPUs: %d background threads lowered, want %d", tc.cpus, got, tc.wantLowered)
		}
		if !mods.isLoaded("xfs") || !mods.isLoaded("ext4") {
			t.Errorf("%d CPUs: loaded %v, want xfs and ext4", tc.cpus, mods.order)
		}
	}
}
