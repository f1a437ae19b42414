package boot

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cryptinit/cryptinit/boot/cmdline"
	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/boot/devices"
	"github.com/cryptinit/cryptinit/boot/dmcrypt"
	"github.com/cryptinit/cryptinit/boot/mkfs"
	"github.com/cryptinit/cryptinit/boot/mounts"
	"github.com/cryptinit/cryptinit/boot/timeline"
	"github.com/cryptinit/cryptinit/tpm"
	"github.com/u-root/u-root/pkg/mount"
	"golang.org/x/sys/unix"
)

// Main is cryptinit as PID 1. It never returns: it execs the real init,
// reboots, or (cryptinit.debug=shell) runs a shell and then reboots.
func Main() {
	start, startMono := time.Now(), monotonicNow()
	logger := console.NewLogger(start, os.Stdout, nil)
	rebootDelay := cmdline.DefaultRebootDelay
	debugShell := false
	var b *Boot // once made: what the debug shell's lockdown undoes
	lockdown := func() error { return lockdownFor(b, logger) }
	defer func() {
		if r := recover(); r != nil {
			f := console.Failure{Reason: fmt.Errorf("cryptinit crashed: %v", r), Hint: crashHint}
			logger.Raw(f.Banner(rebootDelay.String(), debugShell)...)
			halt(logger, rebootDelay, debugShell, lockdown)
		}
	}()

	early, earlyErr := mounts.MountAll(mounts.System{}, "/", mounts.Early())
	attachConsole()
	// /dev/kmsg drops userspace lines beyond 10 per 5 s unless told not
	// to; the previous setting is restored before switch_root.
	devkmsg := setDevkmsg("on")
	kmsg, _ := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	logger.SetOutputs(os.Stdout, kmsg)
	log.SetFlags(0)
	log.SetOutput(logger)
	logger.Printf("cryptinit starting as pid %d on Linux %s (%s)", os.Getpid(), release(), startupNote(startMono))
	for _, r := range early {
		if r.Err != nil && r.Point.FSType == "efivarfs" {
			continue // its module is not loaded yet: mounted after the modules
		}
		if r.Err != nil {
			logger.Printf("mount: %v", r.Err)
		} else if !r.Skipped {
			logger.Printf("mount: %s on %s", r.Point.FSType, r.Point.Target)
		}
	}

	raw, _ := os.ReadFile("/proc/cmdline")
	cl := cmdline.Parse(string(raw))
	rebootDelay, debugShell = cl.RebootDelay, cl.DebugShell
	logger.Printf("cmdline: %s", strings.TrimSpace(string(raw)))
	for _, w := range cl.Warnings {
		logger.Printf("cmdline: warning: %s", w)
	}

	tl := timeline.New(start, nil, func(s timeline.Step) { logger.Raw(s.Line()) })
	if earlyErr != nil {
		fail(logger, tl, &Fatal{Failure: console.Failure{Reason: earlyErr, Hint: "the kernel lacks proc, sysfs, devtmpfs or tmpfs"}}, cl, lockdown)
	}

	b = &Boot{
		Root: "/", Cmdline: cl, Log: logger, Timeline: tl,
		Devices: devices.NewFinder(),
		Open:    openFile,
		Mapper:  dmcrypt.Mapper{Nodes: dmcrypt.SystemNodes()},
		Mkfs:    mkfs.Maker{},
		Mounter: mounts.System{},
		Network: netbootNetwork{cmdline: string(raw), log: logger},
		Modules: openModules(logger),
		EarlyFS: moduleFS(early),
		CPUs:    runtime.NumCPU(),
		// nice 19 for this thread only (Linux priorities are per thread)
		LowerPriority: func() error { return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19) },
		AfterModules: func() {
			// efivarfs is a module in Debian's kernel: mount it once loaded.
			for _, r := range early {
				if r.Point.FSType == "efivarfs" && r.Err != nil {
					if _, err := mounts.MountAll(mounts.System{}, "/", []mounts.Point{r.Point}); err != nil {
						logger.Printf("mount: %v", err)
					} else {
						logger.Printf("mount: efivarfs on %s", r.Point.Target)
					}
				}
			}
		},
	}
	if m, s := openTPM(logger); m != nil {
		b.Measurer = tpmMeasurer{m}
		b.Keys.TPM = s
	}
	b.Keys.SecureBoot = tpm.EFIVars{}
	b.Keys.KMS = kmsClient(logger)
	if avail, err := MemAvailable("/proc/meminfo"); err == nil {
		b.MemAvailable = avail * 9 / 10
	} else {
		logger.Printf("memory: %v", err)
	}
	if cl.PromptTimeout > 0 {
		if tty, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0); err == nil {
			p := &console.Prompter{TTY: tty, Timeout: cl.PromptTimeout}
			if vt := keyboardVT("/sys", "/dev"); vt != nil {
				p.Others = []*os.File{vt}
			}
			b.Prompt = p
		}
	}

	res, err := b.Run(context.Background())
	if err != nil {
		fail(logger, tl, err, cl, lockdown)
	}
	tl.Begin("switch_root", "").End(nil)
	if err := b.WriteTimeline(); err != nil {
		logger.Printf("timeline: %v", err)
	}
	logger.Raw(fmt.Sprintf("switch_root %s %s", res.Root, res.Init))
	if kmsg != nil {
		kmsg.Close()
		logger.SetOutputs(os.Stdout, nil)
	}
	if devkmsg != "" {
		setDevkmsg(devkmsg)
	}
	err = mount.SwitchRoot(res.Root, res.Init)
	fail(logger, tl, &Fatal{Failure: console.Failure{Reason: fmt.Errorf("switch_root to %s: %w", res.Init, err),
		Hint: "check init= and that the root has /dev, /proc, /sys and /run directories"}}, cl, lockdown)
}

// moduleFS lists the filesystem types of the early mounts that failed
// (efivarfs is a module in Debian's kernel): their modules load first.
func moduleFS(early []mounts.Result) []string {
	var out []string
	for _, r := range early {
		if r.Err != nil && r.Point.FSType == "efivarfs" {
			out = append(out, r.Point.FSType)
		}
	}
	return out
}

// fail prints the banner for err and reboots (or runs the debug shell once
// lockdown has succeeded).
func fail(logger *console.Logger, tl *timeline.Timeline, err error, cl cmdline.Cmdline, lockdown func() error) {
	f, ok := err.(*Fatal)
	if !ok {
		f = &Fatal{Failure: console.Failure{Reason: err}}
	}
	for _, fl := range f.Failures() {
		logger.Raw(fl.Banner(cl.RebootDelay.String(), cl.DebugShell)...)
	}
	if err := tl.WriteFile(TimelineFile); err != nil {
		logger.Printf("timeline: %v", err)
	}
	halt(logger, cl.RebootDelay, cl.DebugShell, lockdown)
}

// halt runs the debug shell when asked and lockdown succeeds, then reboots:
// at once when the operator left the shell, else after delay. It does not
// return.
func halt(logger *console.Logger, delay time.Duration, shell bool, lockdown func() error) {
	if shell && guardedShell(logger, lockdown, func() bool { return runShell(logger, "/", "/sys", "/dev") }) {
		delay = 0
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	unix.Sync()
	logger.Printf("rebooting")
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	for {
		logger.Printf("reboot failed (%v): reset the machine", err)
		time.Sleep(time.Minute)
	}
}

// attachConsole makes fds 0-2 the console when the kernel could not open
// one (no /dev/console in the initramfs before devtmpfs was mounted).
func attachConsole() {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		unix.Dup3(fd, i, 0)
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

// devkmsgSysctl rate-limits userspace writes to /dev/kmsg by default.
const devkmsgSysctl = "/proc/sys/kernel/printk_devkmsg"

// setDevkmsg sets printk_devkmsg and returns its previous value ("" when
// it could not be read or set, e.g. locked by printk.devkmsg= on the
// command line).
func setDevkmsg(v string) string {
	old, err := os.ReadFile(devkmsgSysctl)
	if err != nil {
		return ""
	}
	if err := os.WriteFile(devkmsgSysctl, []byte(v+"\n"), 0o644); err != nil {
		return ""
	}
	return strings.TrimSpace(string(old))
}

func release() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// startupNote says how long the Go runtime took between the kernel's exec
// of /init and main, from the kernel's own "Run /init as init process"
// record in /dev/kmsg (printk time and CLOCK_MONOTONIC share their origin
// closely enough for milliseconds).
func startupNote(mainMono time.Duration) string {
	execAt, ok := kernelInitExec()
	if !ok || mainMono <= 0 {
		return "exec time unknown"
	}
	return fmt.Sprintf("kernel ran /init at %.3fs, Go runtime start-up %.0fms", execAt.Seconds(), float64(mainMono-execAt)/float64(time.Millisecond))
}

// kernelInitExec finds when the kernel exec'd the init, in the kernel log.
func kernelInitExec() (time.Duration, bool) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for i := 0; i < 100000; i++ {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE {
			continue // a record was overwritten; go on
		}
		if err != nil || n <= 0 {
			return 0, false
		}
		if d, ok := parseInitExec(string(buf[:n])); ok {
			return d, true
		}
	}
	return 0, false
}

// parseInitExec reads the time stamp of a /dev/kmsg record
// ("6,1234,7874012,-;Run /init as init process") when it is the kernel's
// note that it exec'd the init.
func parseInitExec(record string) (time.Duration, bool) {
	head, msg, ok := strings.Cut(record, ";")
	if !ok || !strings.HasPrefix(msg, "Run ") || !strings.Contains(msg, " as init process") {
		return 0, false
	}
	f := strings.Split(head, ",")
	if len(f) < 3 {
		return 0, false
	}
	us, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || us < 0 {
		return 0, false
	}
	return time.Duration(us) * time.Microsecond, true
}

// monotonicNow is CLOCK_MONOTONIC, the clock of kernel log time stamps.
func monotonicNow() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
