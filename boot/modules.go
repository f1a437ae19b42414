package boot

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cryptinit/cryptinit/boot/modules"
)

// ModuleLoader is what the boot needs of boot/modules.Loader.
type ModuleLoader interface {
	// Stage lists the shipped modules a boot stage needs.
	Stage(s modules.Stage) []string
	// LoadAll loads names (modules or aliases) with their dependencies,
	// concurrently, each module once however often it is asked for.
	LoadAll(names []string) []modules.Result
	// Load loads one name with its dependencies, in the calling thread.
	Load(name string) error
	// Slowest lists the slowest probes so far.
	Slowest(n int) []modules.Timing
}

// moduleStages tracks the stages loading in the background.
//
// Module loading is kept off the critical path: only the Devices stage
// (disk drivers: nothing can be found without them) is loaded before the
// boot goes on. The Mapping and Filesystems stages load in the background
// while the boot waits for partitions, reads META and runs STATE's KDF;
// dm-setup waits for Mapping and every mount for Filesystems (a tpm key
// only for the efivarfs module, loaded first). The Network
// stage loads only when a kms key brings the network up. What a stage
// holds comes from where each module lives in the kernel tree
// (modules.StageOf), never from a list of names.
type moduleStages struct {
	mu     sync.Mutex
	done   map[modules.Stage]chan struct{} // closed once the stage is loaded
	failed map[string]error                // by normalised module name
	net    sync.Once
}

// stageEarlyMounts is the filesystems of the early mounts that failed for
// want of their module (Boot.EarlyFS: efivarfs), loaded first in the
// background and then mounted (AfterModules), so a tpm key, which reads
// Secure Boot state from efivarfs, waits for that small module alone.
const stageEarlyMounts modules.Stage = "early-mounts"

// backgroundStages load in this order, one after the other, so dm-setup
// (needed first) does not share the CPU with the filesystems.
var backgroundStages = []modules.Stage{stageEarlyMounts, modules.StageMapping, modules.StageFilesystems}

// startModules loads the Devices stage (and cryptinit.modules=) now and
// starts the background stages.
func (b *Boot) startModules(ctx context.Context) {
	m := &b.mods
	m.mu.Lock()
	m.done = map[modules.Stage]chan struct{}{}
	for _, s := range backgroundStages {
		m.done[s] = make(chan struct{})
	}
	m.failed = map[string]error{}
	m.mu.Unlock()
	if b.Modules == nil {
		for _, s := range backgroundStages {
			close(m.done[s])
		}
		if b.AfterModules != nil {
			b.AfterModules()
		}
		return
	}
	b.step("modules", "", func() error {
		b.loadStage(modules.StageDevices, b.Cmdline.Modules)
		return nil // individual failures are not fatal; the step that needs one says what is missing
	})
	go b.loadBackground()
}

// loadBackground loads the background stages one module at a time on one
// OS thread whose priority LowerPriority lowered: on a machine with
// one CPU (a TCG VM) it then takes only the time the boot leaves idle
// (device waits, disk I/O) instead of slowing the KDF and every step
// between, and when a step waits for it, it has the CPU to itself. With
// more CPUs it runs alongside the KDF.
func (b *Boot) loadBackground() {
	if b.LowerPriority != nil {
		// Locked and never unlocked: the thread ends with the goroutine
		// instead of going back to the runtime with a low priority.
		runtime.LockOSThread()
		if err := b.LowerPriority(); err != nil {
			b.logf("modules: lower the background priority: %v", err)
		}
	}
	closed := 0
	defer func() {
		// A panic here must not kill PID 1, nor leave a step waiting.
		if r := recover(); r != nil {
			b.logf("modules: loading in the background crashed: %v", r)
		}
		for _, s := range backgroundStages[closed:] {
			close(b.mods.done[s])
		}
	}()
	span := b.Timeline.Begin("modules-background", "")
	for _, s := range backgroundStages {
		if s == stageEarlyMounts {
			b.loadNames(s, b.EarlyFS)
			if b.AfterModules != nil {
				b.AfterModules()
			}
		} else {
			b.loadStage(s, nil)
		}
		close(b.mods.done[s])
		closed++
	}
	span.End(nil)
	var slow []string
	for _, t := range b.Modules.Slowest(5) {
		slow = append(slow, fmt.Sprintf("%s %.0fms", t.Module, float64(t.Took)/float64(time.Millisecond)))
	}
	b.logf("modules: slowest: %s", strings.Join(slow, ", "))
}

// loadStage loads the stage's modules plus extra, and logs what failed.
func (b *Boot) loadStage(s modules.Stage, extra []string) {
	b.loadNames(s, append(b.Modules.Stage(s), extra...))
}

// loadNames loads names for stage s and logs what failed: all at once for
// the stages the boot waits for, one by one on this thread in the
// background.
func (b *Boot) loadNames(s modules.Stage, names []string) {
	if len(names) == 0 {
		return
	}
	var results []modules.Result
	if s == modules.StageDevices || s == modules.StageNetwork {
		results = b.Modules.LoadAll(names)
	} else {
		for _, n := range names {
			results = append(results, modules.Result{Name: n, Err: b.Modules.Load(n)})
		}
	}
	n := 0
	for _, r := range results {
		if r.Err == nil {
			n++
			continue
		}
		b.mods.mu.Lock()
		b.mods.failed[modules.Normalize(r.Name)] = r.Err
		b.mods.mu.Unlock()
		b.logf("modules: %v", r.Err)
	}
	b.logf("modules: %s: %d of %d loaded", s, n, len(names))
}

// awaitModules waits until stage s is loaded; the wait, when there is one,
// is a "modules-wait" step on the timeline.
func (b *Boot) awaitModules(ctx context.Context, s modules.Stage, volume string) {
	b.mods.mu.Lock()
	ch := b.mods.done[s]
	b.mods.mu.Unlock()
	if ch == nil {
		return // Run was not started through startModules (tests of single steps)
	}
	select {
	case <-ch:
		return
	default:
	}
	b.step("modules-wait", volume, func() error {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// loadNetworkModules loads the Network stage once, before the network
// comes up for a kms key.
func (b *Boot) loadNetworkModules() {
	if b.Modules == nil {
		return
	}
	b.mods.net.Do(func() {
		b.step("modules-network", "", func() error {
			b.loadStage(modules.StageNetwork, nil)
			return nil
		})
	})
}

// moduleFailure is why the module for a filesystem (or other name) did not
// load, or nil.
func (b *Boot) moduleFailure(name string) error {
	b.mods.mu.Lock()
	defer b.mods.mu.Unlock()
	return b.mods.failed[modules.Normalize(name)]
}
