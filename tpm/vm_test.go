package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

// TestVMStubBoot boots a UKI made of systemd-stub 252, a kernel and a tiny
// busybox initramfs under OVMF with swtpm, and checks inside the guest that
//   - PCR 11 as measured by the real stub equals PredictPCR11 (no phase),
//   - /.extra carries the .pcrpkey and .pcrsig sections,
//   - seal, unseal, the PCR 15 latch and leave-initrd behave on /dev/tpmrm0
//     (TestDeviceInitrdFlow, cross-compiled into the initramfs),
//   - the Secure Boot state read from efivarfs is the expected one.
//
// It needs CRYPTINIT_TPM_VM_KERNEL (a Debian 6.1 vmlinuz) and, for the
// efivarfs check, CRYPTINIT_TPM_VM_EFIVARFS (efivarfs.ko of that kernel).
// With CRYPTINIT_TPM_VM_SB_VARS (OVMF vars with our keys enrolled) and
// CRYPTINIT_TPM_VM_SB_KEY / _SB_CERT (the db key), it also boots the UKI
// signed, Secure Boot on. Each boot takes ~40 s under TCG.
func TestVMStubBoot(t *testing.T) {
	vmEnvFromOut()
	kernel := os.Getenv("CRYPTINIT_TPM_VM_KERNEL")
	if kernel == "" {
		testenv.MissingForVM(t, "set CRYPTINIT_VM=1 CRYPTINIT_OUT=out (make test-vm, which builds out/vmlinuz) or CRYPTINIT_TPM_VM_KERNEL=/path/to/vmlinuz to boot the UKI in QEMU")
	}
	if testing.Short() {
		t.Skip("VM boot skipped in -short mode")
	}
	for _, tool := range []string{"qemu-system-x86_64", "swtpm", "busybox", "cpio", "go", Objcopy} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%s not installed: %v", tool, err)
		}
	}
	if _, err := os.Stat(stubPath); err != nil {
		testenv.Missing(t, "systemd-stub not installed: %v", err)
	}
	efivarfs := os.Getenv("CRYPTINIT_TPM_VM_EFIVARFS")
	uki, predicted := buildVMUKI(t, kernel, efivarfs)

	t.Run("secure boot off", func(t *testing.T) {
		console := bootVM(t, uki, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", false)
		checkVMConsole(t, console, predicted, efivarfs != "", "0")
	})
	vars, key, cert := os.Getenv("CRYPTINIT_TPM_VM_SB_VARS"), os.Getenv("CRYPTINIT_TPM_VM_SB_KEY"), os.Getenv("CRYPTINIT_TPM_VM_SB_CERT")
	t.Run("secure boot on", func(t *testing.T) {
		if vars == "" || key == "" || cert == "" {
			testenv.Missing(t, "set CRYPTINIT_TPM_VM_SB_VARS, _SB_KEY and _SB_CERT (out/OVMF_VARS_enrolled.fd, out/keys/db.key, out/keys/db.crt)")
		}
		signed := filepath.Join(t.TempDir(), "BOOTX64.EFI")
		if out, err := exec.Command("sbsign", "--key", key, "--cert", cert, "--output", signed, uki).CombinedOutput(); err != nil {
			t.Fatalf("sbsign: %v: %s", err, out)
		}
		console := bootVM(t, signed, "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", vars, true)
		checkVMConsole(t, console, predicted, efivarfs != "", "1")
	})
}

// vmEnvFromOut fills the CRYPTINIT_TPM_VM_* variables not set from the
// image build's output directory when `make test-vm` runs us (CRYPTINIT_VM=1,
// CRYPTINIT_OUT): its kernel, efivarfs module, enrolled OVMF vars and db key.
func vmEnvFromOut() {
	out := os.Getenv("CRYPTINIT_OUT")
	if os.Getenv("CRYPTINIT_VM") != "1" || out == "" {
		return
	}
	set := func(name, path string) {
		if os.Getenv(name) != "" {
			return
		}
		if _, err := os.Stat(path); err == nil {
			os.Setenv(name, path)
		}
	}
	set("CRYPTINIT_TPM_VM_KERNEL", filepath.Join(out, "vmlinuz"))
	if m, _ := filepath.Glob(filepath.Join(out, "kernel/lib/modules/*/kernel/fs/efivarfs/efivarfs.ko")); len(m) > 0 {
		set("CRYPTINIT_TPM_VM_EFIVARFS", m[0])
	}
	set("CRYPTINIT_TPM_VM_SB_VARS", filepath.Join(out, "OVMF_VARS_enrolled.fd"))
	set("CRYPTINIT_TPM_VM_SB_KEY", filepath.Join(out, "keys/db.key"))
	set("CRYPTINIT_TPM_VM_SB_CERT", filepath.Join(out, "keys/db.crt"))
}

// vmInit is the guest's /init: it prints what the stub measured, then runs
// the device test.
const vmInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
if [ -f /efivarfs.ko ]; then
  insmod /efivarfs.ko && mount -t efivarfs efivarfs /sys/firmware/efi/efivars
  export CRYPTINIT_REPORT_SECUREBOOT=1
fi
echo "PCR11-SYSFS=$(cat /sys/class/tpm/tpm0/pcr-sha256/11)"
echo "EXTRA=$(ls /.extra | tr '\n' ' ')"
CRYPTINIT_TPM_DEVICE_TEST=1 /tpm.test -test.v -test.run 'TestDeviceInitrdFlow$' 2>&1
echo "DEVICE-TEST-EXIT=$?"
poweroff -f
`

// buildVMUKI makes the signed-policy UKI and returns it with the PCR 11
// value predicted for it before any phase.
func buildVMUKI(t *testing.T, kernel, efivarfs string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, _ := exec.LookPath("busybox")
	copyFile(t, bb, filepath.Join(root, "bin/busybox"), 0o755)
	if efivarfs != "" {
		copyFile(t, efivarfs, filepath.Join(root, "efivarfs.ko"), 0o644)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(vmInit), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "test", "-c", "-o", filepath.Join(root, "tpm.test"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the device test: %v: %s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ctx := context.Background()
	unsigned := filepath.Join(dir, "unsigned.efi")
	if err := AddUKISections(ctx, stubPath, unsigned,
		UKISection{".osrel", []byte("ID=cryptinit-tpm-test\n")},
		UKISection{".cmdline", []byte("console=ttyS0 loglevel=4 panic=-1\x00")},
		UKISection{".initrd", read(initrd)},
		UKISection{".linux", read(kernel)},
	); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	uki := filepath.Join(dir, "uki.efi")
	if _, err := SignUKI(ctx, unsigned, uki, key); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(uki)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	predicted, _, err := PredictPCR11(f)
	if err != nil {
		t.Fatal(err)
	}
	return uki, predicted
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// bootVM boots uki from an ESP under OVMF with a fresh swtpm and returns the
// serial console.
func bootVM(t *testing.T, uki, code, varsTemplate string, secureBoot bool) string {
	t.Helper()
	dir := t.TempDir()
	esp := filepath.Join(dir, "esp", "EFI", "BOOT")
	if err := os.MkdirAll(esp, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, uki, filepath.Join(esp, "BOOTX64.EFI"), 0o644)
	vars := filepath.Join(dir, "vars.fd")
	copyFile(t, varsTemplate, vars, 0o644)

	state := filepath.Join(dir, "tpm")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(state, "swtpm.sock")
	sw := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state, "--ctrl", "type=unixio,path="+sock)
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sw.Process.Kill(); _ = sw.Wait() }()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}

	machine := "q35"
	args := []string{}
	if secureBoot {
		machine = "q35,smm=on"
		args = append(args, "-global", "driver=cfi.pflash01,property=secure,value=on")
	}
	args = append(args, "-machine", machine, "-m", "1024", "-smp", "1", "-cpu", "max",
		"-nographic", "-no-reboot",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-drive", "file=fat:rw:"+filepath.Join(dir, "esp")+",format=raw,if=none,id=esp",
		"-device", "virtio-blk-pci,drive=esp,bootindex=0",
		"-chardev", "socket,id=chrtpm,path="+sock,
		"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	var out bytes.Buffer
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	qemu.Stdout, qemu.Stderr = &out, &out
	err := qemu.Run()
	console := out.String()
	if ctx.Err() != nil || err != nil {
		t.Fatalf("qemu: %v (timeout: %v)\n%s", err, ctx.Err(), tail(console, 3000))
	}
	return console
}

var pcr11Line = regexp.MustCompile(`PCR11-SYSFS=([0-9A-Fa-f]{64})`)

func checkVMConsole(t *testing.T, console string, predicted []byte, checkSB bool, wantSB string) {
	t.Helper()
	m := pcr11Line.FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("no PCR 11 in the console:\n%s", tail(console, 3000))
	}
	t.Logf("PCR 11 measured by systemd-stub %s, predicted %x", strings.ToLower(m[1]), predicted)
	if got := strings.ToLower(m[1]); got != fmt.Sprintf("%x", predicted) {
		t.Errorf("PCR 11 measured by systemd-stub = %s, predicted %x", got, predicted)
	}
	if !strings.Contains(console, "EXTRA=tpm2-pcr-public-key.pem tpm2-pcr-signature.json") {
		t.Errorf("/.extra lacks the PCR key or signature:\n%s", tail(console, 2000))
	}
	if !strings.Contains(console, "DEVICE-TEST-EXIT=0") {
		t.Errorf("device test failed in the guest:\n%s", tail(console, 4000))
	}
	if i := strings.Index(console, "Secure Boot state: "); i >= 0 {
		t.Logf("guest: %s", strings.SplitN(console[i:], "\n", 2)[0])
	}
	if checkSB && !strings.Contains(console, fmt.Sprintf("Secure Boot state: SecureBoot=%s", wantSB)) {
		t.Errorf("guest did not report SecureBoot=%s:\n%s", wantSB, tail(console, 3000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
