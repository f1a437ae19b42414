package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/modules"
	"github.com/cryptinit/cryptinit/boot/mounts"
	"github.com/cryptinit/cryptinit/unlock"
	"github.com/cryptinit/cryptinit/unlock/config"
	"github.com/cryptinit/cryptinit/unlock/keys"
	"github.com/cryptinit/cryptinit/unlock/luks2"
	"github.com/cryptinit/cryptinit/unlock/probe"
)

// promptTries is how many passphrases the console prompt accepts.
const promptTries = 3

// unlocker returns the engine for this boot's key environment; a TPM PIN
// asked on the console gives back the asking volume's KDF memory in lim
// while a person types (consolePIN).
func (b *Boot) unlocker(p *plan, lim *memLimiter) Unlocker {
	env := b.Keys
	if env.NodeUUID == nil {
		env.NodeUUID = keys.MachineUUID(p.uuidOverride)
	}
	env.Salt = keys.SaltDir(b.stagingDir(config.StateVolume))
	if pp, ok := b.Prompt.(keys.PINPrompt); ok && env.PIN == nil && b.Cmdline.PromptTimeout > 0 {
		env.PIN = consolePIN{mu: &b.promptMu, p: pp, lim: lim}
	}
	if b.NewUnlocker != nil {
		return b.NewUnlocker(env, b.Log)
	}
	e := &unlock.Engine{Env: env, Log: engineLog(b.Log), KDFLimits: b.kdfLimits()}
	if p.journal != nil {
		// the record of a format goes once its filesystem is made
		// (endFormatRecord), so a crash before mkfs is recovered
		e.Journal, e.KeepFormatRecord = p.journal, true
	}
	return e
}

// consolePIN asks the console for a TPM PIN, one question on the console
// at a time (volumes open in parallel). The volume asks from inside its
// unlock, which holds KDF memory: that memory is given back while it waits
// for the console and the person (lim.pauseFor), so it never waits on the
// console lock while holding memory that the volume asking on the console
// may need next (promptOpen), and other volumes' KDFs go on meanwhile.
type consolePIN struct {
	mu  *sync.Mutex
	p   keys.PINPrompt
	lim *memLimiter // nil: nothing to give back
}

func (c consolePIN) TPMPIN(volume string, try, tries int) ([]byte, error) {
	var pin []byte
	var err error
	perr := c.lim.pauseFor(volume, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		pin, err = c.p.TPMPIN(volume, try, tries)
	})
	if perr != nil {
		keys.Zero(pin)
		return nil, fmt.Errorf("TPM PIN for %s: waiting for KDF memory: %w", volume, perr)
	}
	return pin, err
}

// engineLog passes the engine's warnings (interrupted format redone, damaged
// header copy, key slot sync problems) to the console; it never logs secrets.
func engineLog(l *console.Logger) *slog.Logger {
	return slog.New(slog.NewTextHandler(prefixWriter{l, "unlock: "}, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

type prefixWriter struct {
	l      *console.Logger
	prefix string
}

func (w prefixWriter) Write(p []byte) (int, error) {
	w.l.Printf("%s%s", w.prefix, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (b *Boot) limiter() *memLimiter {
	avail := b.MemAvailable
	if avail <= 0 {
		avail = 256 << 20
	}
	return newMemLimiter(avail)
}

// openState opens and mounts STATE, then makes sure it has a salt.
func (b *Boot) openState(ctx context.Context, p *plan, eng Unlocker, lim *memLimiter) error {
	if p.state == nil {
		b.logf("STATE: no partition labelled STATE; skipped")
		return nil
	}
	if err := b.openVolume(ctx, p, p.state, eng, lim); err != nil {
		return err
	}
	created, err := keys.EnsureSalt(b.stagingDir(config.StateVolume), nil)
	if err != nil {
		b.logf("STATE: lockToSTATE salt: %v (lockToSTATE keys will not work)", err)
	} else if created {
		b.logf("STATE: created the lockToSTATE salt (%s)", keys.SaltFile)
	}
	return nil
}

// earlyVolumes are the volumes after STATE that can unlock alongside it:
// their config is already known (the machine config came from the image
// or the command line, not from STATE), none of their keys is lockToSTATE
// (whose salt lives on STATE) or tpm (sealed to PCR 15 after STATE's
// latch), and the machine has a CPU to spare: with one
// CPU, unlocking two volumes at once only slows STATE down.
func (b *Boot) earlyVolumes(mc *machineConfig, p *plan) []*volume {
	if b.CPUs < 2 || mc.cfg == nil || p.state == nil {
		return nil
	}
	var early []*volume
	for _, v := range p.others {
		// a tpm key unseals only after STATE's PCR 15 latch (latch.go)
		if v.cfg == nil || v.cfg.Encryption == nil || !lockedToState(v.cfg.Encryption.Keys) && !hasKeyKind(v.cfg, config.KindTPM) {
			early = append(early, v)
		}
	}
	return early
}

// without returns vols minus those in skip.
func without(vols, skip []*volume) []*volume {
	var out []*volume
	for _, v := range vols {
		if !slices.Contains(skip, v) {
			out = append(out, v)
		}
	}
	return out
}

func volumeNames(vols []*volume) string {
	ids := make([]string, len(vols))
	for i, v := range vols {
		ids[i] = v.ID
	}
	return strings.Join(ids, ", ")
}

func lockedToState(ks []config.Key) bool {
	for _, k := range ks {
		if k.LockToSTATE {
			return true
		}
	}
	return false
}

// openVolumes opens vols concurrently and gathers their failures into one
// *Fatal.
func (b *Boot) openVolumes(ctx context.Context, p *plan, vols []*volume, eng Unlocker, lim *memLimiter) error {
	errs := make([]error, len(vols))
	var wg sync.WaitGroup
	for i, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A panic here would kill PID 1 and hang the machine in a
			// kernel panic: turn it into this volume's failure instead.
			defer func() {
				if r := recover(); r != nil {
					errs[i] = volumeFatal(v, fmt.Errorf("cryptinit crashed while opening %s: %v", v.ID, r), nil)
				}
			}()
			defer b.latchWait.keysDone(v) // never leave the others waiting to latch
			errs[i] = b.openVolume(ctx, p, v, eng, lim)
		}()
	}
	wg.Wait()
	return joinFatal(errs...)
}

// joinFatal folds failures into the first one's banner; nil when all are
// nil.
func joinFatal(errs ...error) error {
	var fatal *Fatal
	for _, err := range errs {
		if err == nil {
			continue
		}
		var f *Fatal
		if !errors.As(err, &f) {
			f = &Fatal{Failure: console.Failure{Reason: err}}
		}
		if fatal == nil {
			fatal = f
		} else {
			fatal.More = append(fatal.More, f.Failures()...)
		}
	}
	if fatal != nil {
		return fatal
	}
	return nil
}

// openVolume opens (or formats) one volume and mounts it at its staging
// directory.
func (b *Boot) openVolume(ctx context.Context, p *plan, v *volume, eng Unlocker, lim *memLimiter) error {
	var err error
	if v.encrypted() {
		err = b.openEncrypted(ctx, v, eng, lim)
	} else {
		err = b.openPlain(ctx, v)
	}
	if err != nil {
		var f *Fatal
		if errors.As(err, &f) {
			return f
		}
		return volumeFatal(v, err, nil)
	}
	b.mu.Lock()
	b.moves = append(b.moves, mounts.Move{From: b.stagingDir(v.ID), Target: v.mountPoint})
	b.mu.Unlock()
	return nil
}

// openPlain mounts a volume without encryption config, formatting it only
// when it is empty.
func (b *Boot) openPlain(ctx context.Context, v *volume) error {
	f, size, err := b.Open(v.part.Path)
	if err != nil {
		return err
	}
	res, err := probe.Probe(f, size)
	f.Close()
	if err != nil {
		return fmt.Errorf("probe %s: %w", v.part.Path, err)
	}
	for _, s := range res.Signatures {
		if strings.HasPrefix(s.Name, "LUKS") {
			return fmt.Errorf("%s holds a %s volume but no config encrypts %s: add its VolumeConfig with the keys (or META tag 9 for STATE)", v.part.Path, s.Name, v.ID)
		}
	}
	fresh := false
	if res.Empty() {
		b.logf("%s: %s is empty: making a plain %s filesystem", v.ID, v.part.Name, v.fs)
		if err := b.step("mkfs", v.ID, func() error { return b.Mkfs.Make(ctx, v.fs, v.part.Path, v.ID) }); err != nil {
			return err
		}
		fresh = true
	}
	return b.mountVolume(ctx, v, v.part.Path, fresh)
}

// openEncrypted unlocks (or formats) the LUKS2 volume, maps it, makes its
// filesystem when fresh and mounts it.
func (b *Boot) openEncrypted(ctx context.Context, v *volume, eng Unlocker, lim *memLimiter) error {
	for _, k := range v.cfg.Encryption.Keys {
		if k.KMS != nil {
			if err := b.ensureNetwork(ctx); err != nil {
				b.logf("%s: network for slot %d (kms): %v", v.ID, k.Slot, err)
			}
			break
		}
	}
	dev, size, err := b.Open(v.part.Path)
	if err != nil {
		return err
	}
	defer dev.Close()

	if hasKeyKind(v.cfg, config.KindTPM) {
		// tpm keys read the Secure Boot state from efivarfs, mounted
		// once its module is loaded
		b.awaitModules(ctx, stageEarlyMounts, v.ID)
	}
	release, err := lim.acquireFor(ctx, v.ID, kdfCost(dev, v.cfg, b.kdfLimits()))
	if err != nil {
		return err
	}
	span := b.Timeline.Begin("unlock", v.ID)
	start := time.Now()
	res, err := eng.Unlock(ctx, *v.cfg, dev, size)
	release()
	span.End(err)
	b.recordAttempts(v.ID, start, res, err)
	var prompted []console.SlotReport
	if err != nil && errors.Is(err, unlock.ErrNoKeyOpens) {
		res, prompted = b.promptOpen(ctx, v, dev, lim)
		if res == nil {
			return volumeFatal(v, err, prompted)
		}
		err = nil
		b.syncAfterPrompt(ctx, v, eng, dev, res, lim)
	}
	if err != nil {
		return volumeFatal(v, err, nil)
	}
	defer res.Zero()
	b.logOpened(v, res)
	v.openedBy = res.Kind // STATE's decides whether its config copy is trusted (configFromState)

	spec, err := dmcrypt.FromMapping("luks2-"+v.ID, v.part.Path, size, res.UUID, res.Mapping, res.Options, res.VolumeKey)
	if err != nil {
		return err
	}
	b.awaitModules(ctx, modules.StageMapping, v.ID)
	var mapped string
	if err := b.step("dm-setup", v.ID, func() error {
		var err error
		mapped, err = b.Mapper.Map(spec)
		return err
	}); err != nil {
		return err
	}
	if err := b.latchOpened(ctx, v, res.VolumeKey); err != nil {
		return err
	}
	fresh, err := b.needsMkfs(v, res, mapped)
	if err != nil {
		return err
	}
	if fresh {
		if err := b.step("mkfs", v.ID, func() error { return b.Mkfs.Make(ctx, v.fs, mapped, v.ID) }); err != nil {
			return err
		}
	}
	if res.Formatted || res.FormatCompleted {
		if err := endFormatRecord(v, eng); err != nil {
			return err
		}
	}
	return b.mountVolume(ctx, v, mapped, fresh)
}

// endFormatRecord removes the journal record of v's format once its
// filesystem is made, when the engine left that to the boot
// (KeepFormatRecord). A removal that fails stops the boot before the
// volume is used: the next boot opens it, sees a filesystem and removes
// the record then.
func endFormatRecord(v *volume, eng Unlocker) error {
	e, ok := eng.(*unlock.Engine)
	if !ok || !e.KeepFormatRecord || e.Journal == nil {
		return nil
	}
	if err := e.Journal.End(v.ID); err != nil {
		return fmt.Errorf("%s is formatted and has its filesystem, but: %w (stopping before it is used; the next boot removes the record)", v.ID, err)
	}
	return nil
}

// needsMkfs decides whether the opened volume, mapped at dev, gets a new
// filesystem: when the engine formatted it now (res.Formatted), or when
// the open found the journal record of a format that completed on an
// earlier boot which stopped (a failed clear, a crash, a failed mkfs)
// before mkfs was done (res.FormatCompleted) and dev carries no signature
// at all. Never over anything with a signature.
func (b *Boot) needsMkfs(v *volume, res *unlock.Result, dev string) (bool, error) {
	if res.Formatted {
		return true, nil
	}
	if !res.FormatCompleted {
		return false, nil
	}
	f, size, err := b.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	found, err := probe.Probe(f, size)
	if err != nil {
		return false, fmt.Errorf("probe %s: %w", dev, err)
	}
	if len(found.Signatures) > 0 {
		b.logf("%s: its format finished on an earlier boot; it holds %s: no new filesystem", v.ID, found.Signatures[0])
		return false, nil
	}
	b.logf("%s: its format finished on an earlier boot that stopped before making its filesystem; %s holds no signature: making one", v.ID, dev)
	return true, nil
}

// hasKeyKind reports whether the volume has a key of kind.
func hasKeyKind(cfg *config.Volume, kind string) bool {
	if cfg == nil || cfg.Encryption == nil {
		return false
	}
	for _, k := range cfg.Encryption.Keys {
		if strings.Contains(k.Kind(), kind) {
			return true
		}
	}
	return false
}

func (b *Boot) logOpened(v *volume, res *unlock.Result) {
	how := fmt.Sprintf("opened with slot %d (%s)", res.Slot, res.Kind)
	if res.Formatted {
		how = fmt.Sprintf("formatted (LUKS2 %s) with slot %d (%s)", res.UUID, res.Slot, res.Kind)
	}
	b.logf("%s: %s", v.ID, how)
	for _, a := range res.Attempts {
		if a.Err != nil {
			b.logf("%s:   %s", v.ID, a)
		}
	}
	if res.Sync != nil && (res.Sync.Changed() || len(res.Sync.Problems) > 0) {
		b.logf("%s: key slots: %s", v.ID, res.Sync)
	}
}

// recordAttempts puts each key tried on the timeline: a "key" step per
// attempt (key fetch and KDF together, as before), and inside it a
// "key-fetch" step (KMS round trip, TPM unseal, salt read) and a "kdf"
// step (the keyslot KDF; on a format, writing the header with it), so a
// slow boot tells a slow key source from an expensive KDF.
func (b *Boot) recordAttempts(id string, start time.Time, res *unlock.Result, err error) {
	var attempts []unlock.Attempt
	var oe *unlock.OpenError
	switch {
	case res != nil:
		attempts = res.Attempts
	case errors.As(err, &oe):
		attempts = oe.Attempts
	}
	at := start
	for _, a := range attempts {
		slot := a.Slot
		b.Timeline.Record("key", id, &slot, at, a.Duration, a.Err)
		var fetchErr, kdfErr error
		if a.KDFDuration == 0 {
			fetchErr = a.Err // no KDF ran: the key itself failed
		} else {
			kdfErr = a.Err
		}
		b.Timeline.Record("key-fetch", id, &slot, at, a.KeyDuration, fetchErr)
		if a.KDFDuration > 0 {
			b.Timeline.Record("kdf", id, &slot, at.Add(a.KeyDuration), a.KDFDuration, kdfErr)
		}
		at = at.Add(a.Duration)
	}
}

// promptOpen asks on the console for a passphrase or recovery key when no
// configured key opened the volume. It returns nil when nobody could or did
// type one that opens it, with a report per try.
func (b *Boot) promptOpen(ctx context.Context, v *volume, dev BlockDevice, lim *memLimiter) (*unlock.Result, []console.SlotReport) {
	if b.Prompt == nil || b.Cmdline.PromptTimeout <= 0 {
		return nil, nil
	}
	hdr, err := luks2.ReadHeader(dev)
	if err != nil {
		return nil, []console.SlotReport{{Slot: -1, Kind: "console passphrase", Err: err}}
	}
	var reports []console.SlotReport
	kdfLim := b.kdfLimits()
	for id := range luks2.MaxKeyslots {
		if _, ok := hdr.Keyslots[id]; ok {
			if err := hdr.CheckKDF(id, kdfLim); err != nil {
				b.logf("%s: a typed passphrase is not tried on %v", v.ID, err)
			}
		}
	}
	for try := 1; try <= promptTries; try++ {
		pass, err := b.askPassphrase(v.ID, try)
		if err != nil {
			reports = append(reports, console.SlotReport{Slot: -1, Kind: "console passphrase", Err: err})
			return nil, reports
		}
		release, err := lim.acquire(ctx, kdfCost(dev, v.cfg, b.kdfLimits()))
		if err != nil {
			keys.Zero(pass)
			return nil, reports
		}
		span := b.Timeline.Begin("prompt-kdf", v.ID)
		key, slot, _, err := hdr.UnlockWithin(dev, pass, kdfLim) // skips the slots logged above
		if rk := keys.NormalizeRecoveryKey(pass); err != nil && rk != nil {
			// a systemd recovery key typed with spaces, without dashes or
			// in capitals: its slot holds the key as systemd printed it
			if !bytes.Equal(rk, pass) {
				key, slot, _, err = hdr.UnlockWithin(dev, rk, kdfLim)
			}
			keys.Zero(rk)
		}
		release()
		span.End(err)
		keys.Zero(pass)
		if err != nil {
			b.logf("%s: the typed passphrase opens no key slot", v.ID)
			reports = append(reports, console.SlotReport{Slot: -1, Kind: "console passphrase", Err: err})
			continue
		}
		m, err := hdr.Mapping()
		if err != nil {
			keys.Zero(key)
			reports = append(reports, console.SlotReport{Slot: slot, Kind: "console passphrase", Err: err})
			return nil, reports
		}
		m.AllowDiscards = m.AllowDiscards || v.cfg.Encryption.AllowDiscards
		return &unlock.Result{VolumeID: v.ID, UUID: hdr.UUID, VolumeKey: key, Mapping: m,
			Options: v.cfg.Encryption.Options, Slot: slot, Kind: "console passphrase"}, nil
	}
	return nil, reports
}

// askPassphrase asks the console for v's passphrase, one question on the
// console at a time. The console lock is held only while asking, never
// while waiting for KDF memory: a volume that holds memory may be waiting
// for the console to ask for its TPM PIN, and both would wait forever.
func (b *Boot) askPassphrase(volume string, try int) ([]byte, error) {
	b.promptMu.Lock()
	defer b.promptMu.Unlock()
	return b.Prompt.Passphrase(volume, try, promptTries)
}

// Syncer is the engine's key slot sync; an Unlocker that has it gets to
// re-enroll the configured keys after a typed passphrase opened the volume
// (e.g. a tpm key after a firmware update changed PCR 7).
type Syncer interface {
	Sync(ctx context.Context, vol config.Volume, dev luks2.Device, opened *unlock.Result) *unlock.SyncReport
}

func (b *Boot) syncAfterPrompt(ctx context.Context, v *volume, eng Unlocker, dev BlockDevice, res *unlock.Result, lim *memLimiter) {
	s, ok := eng.(Syncer)
	if !ok {
		b.logf("%s: key slots not synced (the engine cannot)", v.ID)
		return
	}
	release, err := lim.acquire(ctx, kdfCost(dev, v.cfg, b.kdfLimits()))
	if err != nil {
		return
	}
	defer release()
	var rep *unlock.SyncReport
	b.step("key-sync", v.ID, func() error {
		rep = s.Sync(ctx, *v.cfg, dev, res)
		return nil
	})
	if rep != nil {
		b.logf("%s: key slots after the typed passphrase: %s", v.ID, rep)
	}
}

// mountVolume mounts the volume's device at its staging directory.
func (b *Boot) mountVolume(ctx context.Context, v *volume, dev string, fresh bool) error {
	fstype := v.fs
	if !fresh {
		var err error
		if fstype, err = b.detectFS(dev); err != nil {
			return err
		}
		if v.cfg != nil && v.cfg.Filesystem != "" && v.cfg.Filesystem != fstype {
			b.logf("%s: holds %s while the config says %s; mounting what is there", v.ID, fstype, v.cfg.Filesystem)
		}
	}
	dir := b.stagingDir(v.ID)
	b.awaitFS(ctx, fstype, v.ID)
	return b.step("mount", v.ID, func() error {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := b.Mounter.Mount(dev, dir, fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s (%s): %w%s", dev, fstype, err, b.moduleNote(fstype))
		}
		v.mounted, v.device = true, dev
		b.logf("%s: %s (%s) mounted, goes to %s", v.ID, dev, fstype, v.mountPoint)
		return nil
	})
}

// moduleNote is what to add to a failed mount's error when the
// filesystem's module failed to load: "" or " (the xfs module did not
// load: ...)".
func (b *Boot) moduleNote(fstype string) string {
	if err := b.moduleFailure(fstype); err != nil {
		return fmt.Sprintf(" (the %s module did not load: %v)", fstype, err)
	}
	return ""
}
