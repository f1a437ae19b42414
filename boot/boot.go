package boot

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cryptinit/cryptinit/boot/cmdline"
	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/mounts"
	"github.com/cryptinit/cryptinit/boot/timeline"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
)

// Paths the sequence uses, relative to Boot.Root.
const (
	EmbeddedConfig = "/etc/cryptinit/config.yaml"
	StagingDir     = "/cryptinit/mnt" // volumes are mounted here, then moved into the new root
	NewRoot        = "/sysroot"       // where root= is mounted
	TimelineFile   = "/run/cryptinit/timeline.json"
	StateConfigDir = "cryptinit"         // on STATE: cryptinit/config.yaml
	ConfigSrcDir   = "/cryptinit/cfgsrc" // a config partition is mounted here briefly
)

// DeviceFinder finds partitions by GPT label (boot/devices).
type DeviceFinder interface {
	Wait(ctx context.Context, required []string, timeout time.Duration) (*devices.Found, error)
}

// BlockDevice is an open partition or mapped volume.
type BlockDevice interface {
	luks2.Device
	io.Closer
}

// BlockOpener opens a block device read-write and tells its size.
type BlockOpener func(path string) (BlockDevice, int64, error)

// Mapper creates dm-crypt mappings (boot/dmcrypt).
type Mapper interface {
	Map(spec dmcrypt.Spec) (string, error)
}

// FSMaker makes filesystems (boot/mkfs).
type FSMaker interface {
	Make(ctx context.Context, fstype, dev, label string) error
}

// Unlocker is what boot needs of the unlock engine; *unlock.Engine has it.
type Unlocker interface {
	Unlock(ctx context.Context, vol config.Volume, dev luks2.Device, size int64) (*unlock.Result, error)
}

// Measurer extends boot measurements into the TPM; nil when there is none.
type Measurer interface {
	MeasurePhase(phase string) error
	LatchVolumeKey(volumeID string, volumeKey []byte) error
}

// Network brings up networking for kms keys; Up returns the function that
// takes it down again before switch_root.
type Network interface {
	Up(ctx context.Context) (down func() error, err error)
}

// Prompter asks the person at the console for a passphrase.
type Prompter interface {
	Passphrase(volume string, try, tries int) ([]byte, error)
}

// Boot is one run of the sequence with everything that touches hardware
// injected, so the logic runs in unit tests on temporary directories.
type Boot struct {
	Root     string // "/" in the initramfs; a temporary directory in tests
	Cmdline  cmdline.Cmdline
	Log      *console.Logger
	Timeline *timeline.Timeline

	Devices DeviceFinder
	Open    BlockOpener
	Mapper  Mapper
	Mkfs    FSMaker
	Mounter mounts.Mounter

	// Keys is the template of the key environment (TPM, KMS, Secure Boot).
	// NodeUUID, when nil, becomes keys.MachineUUID(META tag 15); Salt is
	// always STATE's staging mount.
	Keys keys.Env
	// NewUnlocker makes the engine for a key environment; nil: unlock.Engine.
	NewUnlocker func(env keys.Env, log *console.Logger) Unlocker

	Measurer Measurer // nil: no TPM
	Network  Network  // nil: no networking
	Prompt   Prompter // nil: no console to ask on

	// MemAvailable bounds the argon2 memory of concurrent unlocks (bytes).
	MemAvailable int64
	// Modules loads the kernel modules shipped in the image, stage by
	// stage (see modules.go); nil skips them (tests, no modules shipped).
	Modules ModuleLoader
	// LowerPriority, when set, lowers the CPU priority of the calling OS
	// thread (the one loading modules in the background).
	LowerPriority func() error
	// EarlyFS names the filesystems of early mounts that failed for want
	// of their module (efivarfs); they load first, in the background.
	EarlyFS []string
	// AfterModules runs once EarlyFS is loaded (the efivarfs mount),
	// before a tpm key, which waits for it, goes on.
	AfterModules func()
	// CPUs is how many CPUs the machine has. With two or more, volumes
	// that need nothing from STATE unlock alongside it (earlyVolumes).
	CPUs int

	// filled while running
	mu        sync.Mutex
	moves     []mounts.Move
	latchWait *latchOrder // when volumes after STATE may latch PCR 15 (latch.go)
	netDown   func() error
	netOnce   sync.Once
	netErr    error
	promptMu  sync.Mutex
	mods      moduleStages
	opened    *opened // mounts and mappings made, for Lockdown (teardown.go)
	// afterState, when set, runs once STATE is open and latched (tests:
	// a crash there)
	afterState func()
}

func (b *Boot) path(p string) string { return filepath.Join(b.Root, p) }

func (b *Boot) logf(format string, args ...any) { b.Log.Printf(format, args...) }

// step times fn as one timeline step.
func (b *Boot) step(name, volume string, fn func() error) error {
	return b.Timeline.Begin(name, volume).End(fn())
}

// Result is what Run prepared for switch_root.
type Result struct {
	Root string // the mounted new root
	Init string // the init to exec in it
}

// Run performs the sequence up to (not including) switch_root. A returned
// error is a *Fatal carrying the banner.
func (b *Boot) Run(ctx context.Context) (_ *Result, err error) {
	defer recoverFatal(&err) // PID 1 must not die: a crash is a banner
	b.track()
	b.measure("enter-initrd")

	b.startModules(ctx)

	mc, err := b.loadMachineConfig(ctx)
	if err != nil {
		return nil, err
	}

	plan, err := b.discover(ctx, mc)
	if err != nil {
		return nil, err
	}
	defer plan.close()

	lim := b.limiter()
	eng := b.unlocker(plan, lim)
	early := b.earlyVolumes(mc, plan)
	b.latchWait = newLatchOrder()
	b.latchWait.expect(early)
	earlyCtx, cancelEarly := context.WithCancel(ctx)
	earlyDone := make(chan error, 1)
	waitEarly := sync.OnceValue(func() error { return <-earlyDone })
	// However Run returns (a panic that recoverFatal turns into the
	// banner included), the volumes opening alongside STATE finish first:
	// Lockdown must see every mapping and mount they make.
	defer func() {
		cancelEarly()
		waitEarly()
	}()
	if len(early) > 0 {
		b.logf("volumes: %s unlock alongside STATE (%d CPUs; nothing of theirs is on STATE)", volumeNames(early), b.CPUs)
		go func() {
			earlyDone <- guard("", "unlocking volumes alongside STATE", func() error { return b.openVolumes(earlyCtx, plan, early, eng, lim) })
		}()
	} else {
		earlyDone <- nil
	}
	if err := guard(config.StateVolume, "opening STATE", func() error { return b.openState(ctx, plan, eng, lim) }); err != nil {
		// never leave them writing behind the failure banner; STATE's
		// failure is the one to act on (a boot without early volumes would
		// not have tried the others either)
		cancelEarly()
		waitEarly()
		return nil, err
	}
	b.latchWait.stateLatched()
	if b.afterState != nil {
		b.afterState()
	}
	if mc.cfg == nil {
		if err := b.configFromState(ctx, mc, plan); err != nil {
			return nil, err
		}
	}
	var copied sync.WaitGroup
	defer copied.Wait() // never leave it writing behind a failure banner
	if mc.cfg != nil {
		// Refreshing STATE's config copy is disk I/O (write, fsync,
		// rename) that nothing before switch_root reads: it overlaps the
		// other volumes' unlock instead of delaying it.
		copied.Add(1)
		go func() {
			defer copied.Done()
			defer func() {
				if r := recover(); r != nil {
					b.logf("config: keeping a copy on STATE crashed: %v", r)
				}
			}()
			b.saveConfigCopy(mc, plan)
		}()
	}

	// plan.others now also holds the volumes a config on STATE named
	later := without(plan.others, early)
	b.latchWait.expect(later)
	b.latchWait.allExpected()
	if err := joinFatal(b.openVolumes(ctx, plan, later, eng, lim), waitEarly()); err != nil {
		return nil, err
	}
	copied.Wait()

	res, err := b.mountRoot(ctx, plan.found)
	if err != nil {
		return nil, err
	}
	if err := b.step("move-mounts", "", func() error {
		return mounts.MoveInto(b.Mounter, b.path(res.Root), b.moves)
	}); err != nil {
		return nil, &Fatal{Failure: console.Failure{Reason: err,
			Hint: "the new root needs the mount point directories (STATE /system/state, EPHEMERAL /var) or a writable parent"}}
	}
	b.finish()
	return res, nil
}

// finish does what must happen after the last unlock and before
// switch_root: network down, leave-initrd. (Each volume latched PCR 15
// as it opened: latch.go.)
func (b *Boot) finish() {
	if b.netDown != nil {
		if err := b.netDown(); err != nil {
			b.logf("network: down: %v", err)
		}
	}
	b.measure("leave-initrd")
}

func (b *Boot) measure(phase string) {
	if b.Measurer == nil {
		return
	}
	b.step("pcr11-"+phase, "", func() error {
		err := b.Measurer.MeasurePhase(phase)
		if err != nil {
			b.logf("tpm: extend PCR 11 with %s: %v", phase, err)
		}
		return err
	})
}

// WriteTimeline writes the timeline file under /run (which moves into the
// new root with switch_root).
func (b *Boot) WriteTimeline() error {
	return b.Timeline.WriteFile(b.path(TimelineFile))
}

// ensureNetwork brings networking up once, for the first kms key.
func (b *Boot) ensureNetwork(ctx context.Context) error {
	b.netOnce.Do(func() {
		if b.Network == nil {
			b.netErr = fmt.Errorf("a kms key needs the network, and this init has no network support")
			return
		}
		b.loadNetworkModules()
		b.netErr = b.step("network", "", func() error {
			down, err := b.Network.Up(ctx)
			b.netDown = down
			return err
		})
		if b.netErr != nil {
			b.logf("network: %v", b.netErr)
		}
	})
	return b.netErr
}

// openFile is the default BlockOpener.
func openFile(path string) (BlockDevice, int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("size of %s: %w", path, err)
	}
	return f, size, nil
}
