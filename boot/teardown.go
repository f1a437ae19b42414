package boot

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/mounts"
	"github.com/cryptinit/cryptinit/tpm"
	"golang.org/x/sys/unix"
)

// The debug shell is a root shell on the console of a machine whose boot
// failed. Before it starts, Lockdown takes back everything the boot opened:
// volumes that did open are unmounted and unmapped, PCR 11 and PCR 15 are
// extended so no tpm key of this machine unseals any more (no volume key
// is kept to zero: each volume latched PCR 15 as it opened, and its key
// was zeroed once mapped). If any of that fails there is no shell.

// shellLatch is what PCR 15 is extended with before a debug shell (through
// LatchVolumeKey, as a volume's latch), so that it leaves its initial value
// even when no tpm key opened a volume.
const shellLatch = "debug-shell"

// Unmapper removes dm-crypt mappings (dmcrypt.Mapper has it).
type Unmapper interface {
	Unmap(name string) error
}

// opened records what the boot mounted and mapped and has not undone yet,
// in the order it was done: a mount moved into the new root moves to the end,
// so undoing in reverse takes children before their parents.
type opened struct {
	mu     sync.Mutex
	mounts []mountRecord
	maps   []string // dm-crypt mapping names
}

type mountRecord struct {
	target string // where it is mounted now
	what   string // "STATE", "root", "config partition"
}

// trackingMounter records the mounts of the boot for Lockdown.
type trackingMounter struct {
	mounts.Mounter
	o    *opened
	name func(target string) string
}

func (t *trackingMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := t.Mounter.Mount(source, target, fstype, flags, data); err != nil {
		return err
	}
	t.o.mu.Lock()
	defer t.o.mu.Unlock()
	if flags&unix.MS_MOVE != 0 {
		for i, m := range t.o.mounts {
			if m.target == source {
				t.o.mounts = append(slices.Delete(t.o.mounts, i, i+1), mountRecord{target: target, what: m.what})
				return nil
			}
		}
	}
	t.o.mounts = append(t.o.mounts, mountRecord{target: target, what: t.name(target)})
	return nil
}

func (t *trackingMounter) Unmount(target string) error {
	if err := t.Mounter.Unmount(target); err != nil {
		return err
	}
	t.o.forgetMount(target)
	return nil
}

func (o *opened) forgetMount(target string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.mounts) - 1; i >= 0; i-- {
		if o.mounts[i].target == target {
			o.mounts = slices.Delete(o.mounts, i, i+1)
			return
		}
	}
}

// trackingMapper records the dm-crypt mappings of the boot for Lockdown.
type trackingMapper struct {
	Mapper
	o *opened
}

func (t *trackingMapper) Map(spec dmcrypt.Spec) (string, error) {
	path, err := t.Mapper.Map(spec)
	if err == nil {
		t.o.mu.Lock()
		t.o.maps = append(t.o.maps, spec.Name)
		t.o.mu.Unlock()
	}
	return path, err
}

// track makes the boot record its mounts and mappings (once per Boot).
func (b *Boot) track() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.opened != nil {
		return
	}
	b.opened = &opened{}
	if b.Mounter != nil {
		b.Mounter = &trackingMounter{Mounter: b.Mounter, o: b.opened, name: b.mountName}
	}
	if b.Mapper != nil {
		b.Mapper = &trackingMapper{Mapper: b.Mapper, o: b.opened}
	}
}

// mountName says what a mount at target is, for the console.
func (b *Boot) mountName(target string) string {
	switch {
	case filepath.Dir(target) == b.path(StagingDir):
		return filepath.Base(target)
	case target == b.path(NewRoot):
		return "root"
	case target == b.path(ConfigSrcDir):
		return "config partition"
	}
	return target
}

// Lockdown makes the machine safe for a debug shell after a failed boot,
// each step said on the console: it unmounts every mount the boot made (last
// first), removes every dm-crypt mapping it made (and its /dev/mapper node),
// takes the network down when a kms key brought it up, extends PCR 11 with the debug-shell phase (no tpm key sealed to this boot's
// PCR 11 unseals any more), extends PCR 15 with a fixed latch (it leaves its
// initial value even when no tpm key opened a volume), and says that no
// volume key is kept (each volume latched PCR 15 as it opened and its key
// was zeroed once mapped). It does every step it can and returns an error
// naming each that failed; the shell must then not start. Without a TPM the
// PCR steps are skipped: nothing can be unsealed there.
func (b *Boot) Lockdown() error {
	var errs []error
	failed := func(format string, args ...any) {
		err := fmt.Errorf(format, args...)
		b.logf("debug shell: %v", err)
		errs = append(errs, err)
	}
	var o opened
	if b.opened != nil {
		b.opened.mu.Lock()
		o.mounts, o.maps = slices.Clone(b.opened.mounts), slices.Clone(b.opened.maps)
		b.opened.mu.Unlock()
	}

	for i := len(o.mounts) - 1; i >= 0; i-- {
		m := o.mounts[i]
		var err error
		if t, ok := b.Mounter.(*trackingMounter); ok {
			err = t.Unmount(m.target)
		} else {
			err = b.Mounter.Unmount(m.target)
		}
		if err != nil {
			failed("unmount %s (%s): %w", m.what, m.target, err)
			continue
		}
		b.logf("debug shell: unmounted %s (%s)", m.what, m.target)
	}

	for i := len(o.maps) - 1; i >= 0; i-- {
		name := o.maps[i]
		what := strings.TrimPrefix(name, "luks2-")
		if err := b.unmap(name); err != nil {
			failed("unmap %s (%s): %w", name, what, err)
			continue
		}
		b.logf("debug shell: unmapped %s (%s)", name, what)
	}
	if len(o.mounts) == 0 && len(o.maps) == 0 {
		b.logf("debug shell: the boot left no volume mounted or mapped")
	}

	if b.netDown != nil { // the KMS must not be reachable from the shell
		if err := b.netDown(); err != nil {
			failed("network down: %w", err)
		} else {
			b.netDown = nil
			b.logf("debug shell: network down")
		}
	}

	if b.Measurer == nil {
		b.logf("debug shell: no TPM: PCR 11 and PCR 15 not extended (no tpm key can be unsealed here)")
	} else {
		if err := b.Measurer.MeasurePhase(string(tpm.PhaseDebugShell)); err != nil {
			failed("extend PCR 11 with %s: %w", tpm.PhaseDebugShell, err)
		} else {
			b.logf("debug shell: PCR 11 extended with %s: tpm keys sealed to this boot no longer unseal", tpm.PhaseDebugShell)
		}
		if err := b.Measurer.LatchVolumeKey(shellLatch, []byte(shellLatch)); err != nil {
			failed("latch PCR 15: %w", err)
		} else {
			b.logf("debug shell: PCR 15 latched (%s)", shellLatch)
		}
	}

	// no key copy to zero: each volume latched PCR 15 as it opened
	// (latch.go) and its key was zeroed once mapped
	b.logf("debug shell: no volume key kept: each opened volume latched PCR 15 as it opened")

	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// unmap removes one mapping the boot made.
func (b *Boot) unmap(name string) error {
	m := b.Mapper
	if t, ok := m.(*trackingMapper); ok {
		m = t.Mapper
	}
	u, ok := m.(Unmapper)
	if !ok {
		return errors.New("this boot's mapper cannot remove mappings")
	}
	if err := u.Unmap(name); err != nil {
		return err
	}
	if b.opened != nil {
		b.opened.mu.Lock()
		if i := slices.Index(b.opened.maps, name); i >= 0 {
			b.opened.maps = slices.Delete(b.opened.maps, i, i+1)
		}
		b.opened.mu.Unlock()
	}
	return nil
}
