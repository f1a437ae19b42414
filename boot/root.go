package boot

import (
	"context"
	"fmt"
	"os"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"golang.org/x/sys/unix"
)

// mountRoot mounts root= at /sysroot and checks that init= exists in it.
func (b *Boot) mountRoot(ctx context.Context, found *devices.Found) (*Result, error) {
	fail := func(err error, hint string) (*Result, error) {
		return nil, &Fatal{Failure: console.Failure{Reason: err, Hint: hint}}
	}
	spec := b.Cmdline.Root
	if spec == "" {
		return fail(fmt.Errorf("no root= on the kernel command line"), "add root=PARTLABEL=<label>, root=PARTUUID=<guid>, root=UUID=<uuid> or root=/dev/<name> (and rootfstype=) to the command line")
	}
	var res *Result
	err := b.step("root", "", func() error {
		dev, err := devices.ResolveWait(ctx, spec, found, b.Cmdline.Wait)
		if err != nil {
			return err
		}
		fstype := b.Cmdline.RootFSType
		if fstype == "" {
			if fstype, err = b.detectFS(dev); err != nil {
				return fmt.Errorf("root %s: %w", dev, err)
			}
		}
		var flags uintptr
		if b.Cmdline.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		dir := b.path(NewRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		b.awaitFS(ctx, fstype, "")
		if err := b.Mounter.Mount(dev, dir, fstype, flags, b.Cmdline.RootFlags); err != nil {
			return fmt.Errorf("mount root %s (%s) on %s: %w%s", dev, fstype, NewRoot, err, b.moduleNote(fstype))
		}
		if _, err := os.Lstat(b.path(NewRoot + b.Cmdline.Init)); err != nil {
			return fmt.Errorf("init %s not found in the root %s: %w", b.Cmdline.Init, spec, err)
		}
		mode := "rw"
		if b.Cmdline.ReadOnly {
			mode = "ro"
		}
		b.logf("root: %s (%s, %s) mounted at %s", dev, fstype, mode, NewRoot)
		res = &Result{Root: NewRoot, Init: b.Cmdline.Init}
		return nil
	})
	if err != nil {
		return fail(err, "check root= (PARTLABEL=, PARTUUID=, UUID= or /dev/), rootfstype= and init= on the kernel command line, and that the root disk is attached")
	}
	return res, nil
}
