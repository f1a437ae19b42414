package vm

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB the harness uses, so that the demo (a plain
// program) can drive nodes too.
type TB interface {
	Helper()
	Log(args ...any)
	Logf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Firmware selects how QEMU starts the kernel.
type Firmware int

const (
	// Direct boots -kernel/-initrd/-append: fastest, no UEFI, no Secure Boot.
	Direct Firmware = iota
	// UEFI boots the UKI from an ESP with OVMF, Secure Boot off.
	UEFI
	// SecureBoot boots the signed UKI with OVMF, our keys enrolled, Secure Boot on.
	SecureBoot
)

func (f Firmware) String() string {
	return [...]string{"direct", "uefi", "secureboot"}[f]
}

// BootTimeout is the default time allowed for one expected console line; TCG
// on a busy 2-core machine is slow, and an argon2 unlock adds seconds.
const BootTimeout = 180 * time.Second

// Node is one machine across boots: its disks, TPM state, OVMF variables and
// SMBIOS UUID stay; each Boot starts a fresh QEMU (and swtpm) on them.
type Node struct {
	t     TB
	A     *Artifacts
	Name  string
	Dir   string // scratch directory, removed when the test ends
	UUID  string // SMBIOS system UUID (the nodeID key's input)
	Disks []*Disk
	TPM   bool // attach a software TPM (state kept across boots)

	rootDisk string
	tpmState string
	boots    int
}

// NewNode makes a node with a root disk and the given data disks (each a list
// of partitions). The UUID is random unless set afterwards.
func NewNode(t TB, a *Artifacts, name string, disks ...[]Partition) *Node {
	t.Helper()
	n := &Node{t: t, A: a, Name: name, Dir: t.TempDir(), UUID: randomUUID()}
	root, err := CreateDisk(filepath.Join(n.Dir, "root.img"), []Partition{
		{Label: "ROOT", Size: 16 * MiB, Fill: FillFrom(a.RootFS)},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.rootDisk = root.Path
	for i, parts := range disks {
		d, err := CreateDisk(filepath.Join(n.Dir, fmt.Sprintf("disk%d.img", i)), parts)
		if err != nil {
			t.Fatal(err)
		}
		n.Disks = append(n.Disks, d)
	}
	return n
}

func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// BootOptions describe one boot of a node.
type BootOptions struct {
	Firmware Firmware
	// Config, when set, is the machine config placed at /etc/cryptinit/config.yaml
	// in the initramfs (by an overlay archive; the UKI is rebuilt and signed).
	Config []byte
	// Overlay adds or replaces more initramfs files (e.g. /init for the smoke test).
	Overlay Overlay
	// Archives are more initramfs archives appended as they are (cpio files).
	Archives []string
	// Cmdline words appended to the default kernel command line.
	Cmdline string
	// Net attaches a NIC on QEMU's user network (host reachable at 10.0.2.2).
	Net bool
	// NIC is the QEMU model of that NIC; "" is virtio-net-pci.
	NIC string
	// Bus is how the node's data disks attach; the root disk (the harness's
	// real root, not a volume) and the harness's ESP stay on virtio-blk.
	Bus DiskBus
	// USBKeyboard plugs a usb-kbd into an xHCI controller and opens QEMU's
	// monitor on a socket, so VM.SendKeys types on it.
	USBKeyboard bool
	// Unsigned boots a UKI that is not signed (to prove Secure Boot refuses it).
	Unsigned bool
	// MemoryMiB defaults to 1024; CPUs defaults to 1 (two VMs share 2 cores).
	MemoryMiB int
	CPUs      int
	// NoESP (UEFI boots) leaves out the harness's own ESP disk: the firmware
	// boots from an ESP partition the test put on one of the node's disks,
	// holding the image's UKI (systemd-stub then names that partition in
	// LoaderDevicePartUUID). Config and Cmdline are not applied then.
	NoESP bool
}

// VM is one running QEMU.
type VM struct {
	t       TB
	Console *Console
	Log     string // console log file
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	tpm     *SWTPM
	done    chan struct{}
	exitErr error
	started time.Time
	release func()
	monitor string // HMP socket when BootOptions.USBKeyboard
}

// slots bounds the vCPUs of the VMs running at once (2 cores:
// CRYPTINIT_VM_PARALLEL, default 2); a VM takes one slot per vCPU, at most
// all of them.
var slots = func() chan struct{} {
	n, _ := strconv.Atoi(os.Getenv("CRYPTINIT_VM_PARALLEL"))
	if n <= 0 {
		n = 2
	}
	return make(chan struct{}, n)
}()

// slotsMu makes taking several slots one step, so that two VMs that each
// want two never hold one each and wait for ever.
var slotsMu sync.Mutex

// takeSlots takes a slot per vCPU and returns how many it took.
func takeSlots(cpus int) int {
	k := min(max(cpus, 1), cap(slots))
	slotsMu.Lock()
	defer slotsMu.Unlock()
	for i := 0; i < k; i++ {
		slots <- struct{}{}
	}
	return k
}

// Boot starts QEMU for this node and returns at once; use Expect and Wait.
// The VM is killed when the test ends if it is still running.
func (n *Node) Boot(o BootOptions) *VM {
	t := n.t
	t.Helper()
	n.boots++
	bootDir := filepath.Join(n.Dir, fmt.Sprintf("boot%d", n.boots))
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args, err := n.qemuArgs(o, bootDir)
	if err != nil {
		t.Fatal(err)
	}
	monitor := ""
	if o.USBKeyboard {
		if monitor, err = monitorSocket(t, bootDir); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-monitor", "unix:"+monitor+",server=on,wait=off")
	}
	taken := takeSlots(o.CPUs)
	released := false
	release := func() {
		if !released {
			released = true
			for i := 0; i < taken; i++ {
				<-slots
			}
		}
	}
	vm := &VM{t: t, Log: filepath.Join(bootDir, "console.log"), done: make(chan struct{}), release: release, monitor: monitor}
	if n.TPM {
		if n.tpmState == "" {
			if n.tpmState, err = NewTPMState(n.Dir); err != nil {
				release()
				t.Fatal(err)
			}
		}
		if vm.tpm, err = StartSWTPM(n.tpmState); err != nil {
			release()
			t.Fatal(err)
		}
		args = append(args, vm.tpm.QEMUArgs()...)
	}
	logFile, err := openLog(vm.Log)
	if err != nil {
		release()
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("[%s#%d] ", n.Name, n.boots)
	vm.Console = newConsole(logFile, func(line string) {
		if strings.TrimSpace(line) != "" {
			t.Log(prefix + line)
		}
	})
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout = vm.Console
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if vm.stdin, err = cmd.StdinPipe(); err != nil {
		release()
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bootDir, "qemu.args"), []byte(strings.Join(args, "\n")+"\n"), 0o644)
	if err := cmd.Start(); err != nil {
		release()
		vm.tpm.Stop()
		t.Fatalf("vm: start qemu: %v", err)
	}
	vm.cmd = cmd
	vm.started = time.Now()
	go func() {
		vm.exitErr = cmd.Wait()
		if stderr.Len() > 0 {
			vm.exitErr = fmt.Errorf("%v; stderr: %s", vm.exitErr, strings.TrimSpace(stderr.String()))
		}
		vm.Console.close()
		logFile.Close()
		vm.tpm.Stop()
		release()
		close(vm.done)
	}()
	t.Cleanup(vm.Kill)
	t.Logf("%sbooting (%s, uuid %s); console log %s", prefix, o.Firmware, n.UUID, vm.Log)
	return vm
}

func (n *Node) qemuArgs(o BootOptions, bootDir string) ([]string, error) {
	mem, cpus := o.MemoryMiB, o.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 1
	}
	cmdline := n.A.Cmdline
	if o.Cmdline != "" {
		cmdline += " " + o.Cmdline
	}
	overlay := Overlay{}
	for k, v := range o.Overlay {
		overlay[k] = v
	}
	if o.Config != nil {
		overlay["/etc/cryptinit/config.yaml"] = OverlayFile{Data: o.Config, Mode: 0o600}
	}
	initrd := n.A.Initramfs
	if len(overlay) > 0 || len(o.Archives) > 0 {
		parts := append([]string{n.A.Initramfs}, o.Archives...)
		if len(overlay) > 0 {
			ov := filepath.Join(bootDir, "overlay.cpio")
			var b bytes.Buffer
			if err := overlay.WriteNewc(&b); err != nil {
				return nil, err
			}
			if err := os.WriteFile(ov, b.Bytes(), 0o644); err != nil {
				return nil, err
			}
			parts = append(parts, ov)
		}
		initrd = filepath.Join(bootDir, "initrd.img")
		if err := concatFiles(initrd, parts...); err != nil {
			return nil, err
		}
	}
	args := []string{
		"-machine", "q35", "-accel", "tcg", "-cpu", "max",
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-display", "none", "-serial", "stdio",
		"-no-reboot", "-uuid", n.UUID,
		"-device", "virtio-rng-pci",
	}
	if !o.USBKeyboard {
		args = append(args, "-monitor", "none")
	}
	if o.Net {
		model := o.NIC
		if model == "" {
			model = "virtio-net-pci"
		}
		args = append(args, "-nic", "user,model="+model)
	} else {
		args = append(args, "-nic", "none")
	}
	switch o.Firmware {
	case Direct:
		args = append(args, "-kernel", n.A.Kernel, "-initrd", initrd, "-append", cmdline)
	case UEFI, SecureBoot:
		code, varsTemplate := ovmfCode, ovmfVars
		if o.Firmware == SecureBoot {
			code, varsTemplate = ovmfCodeSB, n.A.VarsSB
			args[1] = "q35,smm=on"
			args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		// One private variable store per firmware kind, kept across boots.
		vars := filepath.Join(n.Dir, "OVMF_VARS."+o.Firmware.String()+".fd")
		if _, err := os.Stat(vars); err != nil {
			if err := copyFile(varsTemplate, vars); err != nil {
				return nil, err
			}
		}
		uki := n.A.UKI
		if initrd != n.A.Initramfs || cmdline != n.A.Cmdline || o.Unsigned {
			uki = filepath.Join(bootDir, "uki.efi")
			if err := n.A.BuildUKI(initrd, cmdline, uki, !o.Unsigned); err != nil {
				return nil, err
			}
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
		if !o.NoESP {
			esp := filepath.Join(bootDir, "esp.img")
			if err := CreateESP(esp, 48, []ESPFile{{Src: uki, Dest: "/EFI/BOOT/BOOTX64.EFI"}}); err != nil {
				return nil, err
			}
			args = append(args,
				"-drive", "if=none,id=esp,format=raw,file="+esp,
				"-device", "virtio-blk-pci,drive=esp,bootindex=0")
		}
	}
	args = append(args,
		"-drive", "if=none,id=root,format=raw,readonly=on,file="+n.rootDisk,
		"-device", "virtio-blk-pci,drive=root")
	args = append(args, o.Bus.controllers(len(n.Disks) > 0, o.USBKeyboard)...)
	for i, d := range n.Disks {
		id := fmt.Sprintf("d%d", i)
		args = append(args,
			"-drive", "if=none,id="+id+",format=raw,cache=unsafe,file="+d.Path,
			"-device", o.Bus.device(id, i))
	}
	if o.USBKeyboard {
		args = append(args, "-device", "usb-kbd,id=kbd0,bus=xhci.0")
	}
	return args, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// Expect waits for a console line matching one of patterns (regular
// expressions) and returns the index of the one that matched; on timeout or
// QEMU exit the test fails with the end of the console.
func (v *VM) Expect(timeout time.Duration, patterns ...string) (int, string) {
	v.t.Helper()
	i, line, err := v.Console.Expect(timeout, patterns...)
	if err != nil {
		v.t.Fatalf("%v after %s%s\n--- console tail ---\n%s\n--- (full log %s)", err, time.Since(v.started).Round(time.Second), v.exitNote(), v.Console.Tail(40), v.Log)
	}
	return i, line
}

// ExpectPrompt waits for a prompt (an unfinished line) matching pattern.
func (v *VM) ExpectPrompt(pattern string) string {
	v.t.Helper()
	_, line, err := v.Console.ExpectPrompt(BootTimeout, pattern)
	if err != nil {
		v.t.Fatalf("%v after %s%s\n--- console tail ---\n%s\n--- (full log %s)", err, time.Since(v.started).Round(time.Second), v.exitNote(), v.Console.Tail(40), v.Log)
	}
	return line
}

// exitNote says how QEMU ended, when it has (its stderr explains a bad start).
func (v *VM) exitNote() string {
	if !v.Exited() {
		return ""
	}
	if v.exitErr != nil {
		return fmt.Sprintf(" (qemu: %v)", v.exitErr)
	}
	return " (qemu exited: the guest powered off or rebooted)"
}

// ExpectLine waits for one pattern; see Expect.
func (v *VM) ExpectLine(pattern string) string {
	v.t.Helper()
	_, line := v.Expect(BootTimeout, pattern)
	return line
}

// Type sends text to the serial console, as if typed.
func (v *VM) Type(s string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, s); err != nil {
		v.t.Fatalf("vm: type on console: %v", err)
	}
}

// Wait waits for QEMU to exit (the guest powered off, or rebooted: QEMU runs
// with -no-reboot) and returns how long the VM ran.
func (v *VM) Wait(timeout time.Duration) time.Duration {
	v.t.Helper()
	select {
	case <-v.done:
		return time.Since(v.started)
	case <-time.After(timeout):
		v.Kill()
		v.t.Fatalf("vm: QEMU still running after %s\n--- console tail ---\n%s", timeout, v.Console.Tail(40))
		return 0
	}
}

// Exited reports whether QEMU has exited.
func (v *VM) Exited() bool {
	select {
	case <-v.done:
		return true
	default:
		return false
	}
}

// Kill stops QEMU (and its swtpm) if still running and waits for it.
func (v *VM) Kill() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	select {
	case <-v.done:
		return
	default:
	}
	syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-v.done:
	case <-time.After(10 * time.Second):
	}
}

// BootSmoke boots the node with the harness self-test /init instead of cryptinit.
func (n *Node) BootSmoke(o BootOptions) *VM {
	n.t.Helper()
	o.Archives = append(o.Archives, n.A.Smoke)
	return n.Boot(o)
}
