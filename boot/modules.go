package boot

import (
	"context"
	"errors"
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
// boot goes on. The Mapping stage loads in the background while the boot
// waits for partitions, reads META and runs STATE's KDF; dm-setup waits for
// it (a tpm key only for the efivarfs module, loaded first). Filesystems
// load by type, never all of them: once the plan says which types the
// volumes and the root will hold, those load in the background too
// (prefetch), and every mount loads what its type needs, waiting only if
// that is still loading (awaitFS). A Debian xfs module is ~0.7 s of CPU
// under TCG and ext4 with its libraries ~0.3 s: a boot that uses one of them
// does not pay for the other. The Network stage loads only when a kms key
// brings the network up. What a stage holds comes from where each module
// lives in the kernel tree (modules.StageOf); a filesystem's module from the
// kernel's own "fs-<type>" alias.
type moduleStages struct {
	mu     sync.Mutex
	done   map[modules.Stage]chan struct{} // closed once the stage is loaded
	failed map[string]error                // by normalised module name or filesystem type
	fs     map[string]chan struct{}        // by filesystem type: closed once loaded (or failed)
	fsHint chan []string                   // the filesystem types the plan expects, sent once
	hinted sync.Once
	net    sync.Once
}

// fsExtras are modules a filesystem needs at mount time besides its own,
// which the kernel would ask modprobe for: FAT's default code page (437)
// and I/O character set (ascii) in Debian's kernel configuration.
var fsExtras = map[string][]string{
	"vfat": {"nls_cp437", "nls_ascii"},
}

// stageEarlyMounts is the filesystems of the early mounts that failed for
// want of their module (Boot.EarlyFS: efivarfs), loaded first in the
// background and then mounted (AfterModules), so a tpm key, which reads
// Secure Boot state from efivarfs, waits for that small module alone.
const stageEarlyMounts modules.Stage = "early-mounts"

// backgroundStages load in this order, one after the other, before the
// prefetched filesystems, so dm-setup (needed first) does not share the
// CPU with them.
var backgroundStages = []modules.Stage{stageEarlyMounts, modules.StageMapping}

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
	m.fs = map[string]chan struct{}{}
	m.fsHint = make(chan []string, 1)
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
	go b.loadBackground(ctx)
}

// loadBackground loads the background stages one module at a time on one
// OS thread whose priority LowerPriority lowered: on a machine with one CPU
// (a TCG VM) it then takes only the time the boot leaves idle (device
// waits, disk I/O) instead of slowing the KDF and every step between, and
// when a step waits for it, it has the CPU to itself. With more CPUs, the
// prefetched filesystems load on threads of their own, side by side: when
// the KDFs leave the CPUs, a mount waits for the biggest module, not for
// the sum of them. (Measured under TCG with two vCPUs: a loader at normal
// priority slows two concurrent KDFs more than it gains, 3.7 s against
// 3.2 s to switch_root; see README "Measured".)
func (b *Boot) loadBackground(ctx context.Context) {
	b.lowerThread(true)
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
	select {
	case types := <-b.mods.fsHint:
		if b.CPUs < 2 {
			for _, t := range types {
				b.loadFS(ctx, t)
			}
			break
		}
		// this thread takes the first type, a thread of its own each other
		var wg sync.WaitGroup
		for _, t := range types[min(1, len(types)):] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					if r := recover(); r != nil {
						b.logf("modules: loading %s in the background crashed: %v", t, r)
					}
				}()
				b.lowerThread(false)
				b.loadFS(ctx, t)
			}()
		}
		if len(types) > 0 {
			b.loadFS(ctx, types[0])
		}
		wg.Wait()
	case <-ctx.Done():
	}
	span.End(nil)
	var slow []string
	for _, t := range b.Modules.Slowest(5) {
		slow = append(slow, fmt.Sprintf("%s %.0fms", t.Module, float64(t.Took)/float64(time.Millisecond)))
	}
	b.logf("modules: slowest: %s", strings.Join(slow, ", "))
}

// lowerThread locks the calling goroutine to its OS thread and lowers that
// thread's priority (LowerPriority), saying so when that fails if report
// is set. The thread is never unlocked: it ends with the goroutine instead
// of going back to the runtime with a low priority.
func (b *Boot) lowerThread(report bool) {
	if b.LowerPriority == nil {
		return
	}
	runtime.LockOSThread()
	if err := b.LowerPriority(); err != nil && report {
		b.logf("modules: lower the background priority: %v", err)
	}
}

// prefetchFS names the filesystem types the boot expects to mount (the
// volumes' and the root's), for the background loader to load after the
// Mapping stage. Only the first call counts; a type not named here still
// loads when a mount needs it.
func (b *Boot) prefetchFS(types ...string) {
	if b.mods.fsHint == nil {
		return
	}
	b.mods.hinted.Do(func() {
		var uniq []string
		seen := map[string]bool{}
		for _, t := range types {
			if t != "" && !seen[t] {
				seen[t] = true
				uniq = append(uniq, t)
			}
		}
		b.mods.fsHint <- uniq
	})
}

// awaitFS makes sure the modules of filesystem type fstype are loaded
// before a mount of that type: at once when they are, else loading them
// (or waiting for the background loader that is) as a "modules-wait" step.
func (b *Boot) awaitFS(ctx context.Context, fstype, volume string) {
	if b.Modules == nil || fstype == "" {
		return
	}
	b.mods.mu.Lock()
	ch := b.mods.fs[fstype]
	b.mods.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
			return
		default:
		}
	}
	b.step("modules-wait", volume, func() error { return b.loadFS(ctx, fstype) })
}

// loadFS loads the modules of filesystem type fstype once: its "fs-<type>"
// alias (absent when the kernel has the filesystem built in) and fsExtras.
// Concurrent callers wait for the first. A failure is kept for
// moduleNote, under the type's name, for the mount's error.
func (b *Boot) loadFS(ctx context.Context, fstype string) error {
	b.mods.mu.Lock()
	if b.mods.fs == nil {
		b.mods.fs = map[string]chan struct{}{}
	}
	ch, loading := b.mods.fs[fstype]
	if !loading {
		ch = make(chan struct{})
		b.mods.fs[fstype] = ch
	}
	b.mods.mu.Unlock()
	if loading {
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(ch)
	var errs []error
	if err := b.Modules.Load("fs-" + fstype); err != nil {
		// Not shipped: built into the kernel, or missing; the mount tells.
		errs = append(errs, err)
	}
	for _, m := range fsExtras[fstype] {
		if err := b.Modules.Load(m); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.mods.mu.Lock()
		if b.mods.failed == nil {
			b.mods.failed = map[string]error{}
		}
		b.mods.failed[modules.Normalize(fstype)] = err
		b.mods.mu.Unlock()
		if len(errs) == 1 && errors.Is(err, modules.ErrNotShipped) {
			b.logf("modules: %s: no module in the image (built into the kernel?)", fstype)
		} else {
			b.logf("modules: %s: %v", fstype, err)
		}
		return nil // the mount says what is missing, with this reason
	}
	b.logf("modules: %s loaded", fstype)
	return nil
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
