package vm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkVMBoot measures, per iteration, a node's first boot (formats STATE
// and EPHEMERAL) and second boot (reopens them) to the real root, direct
// kernel boot, TCG. Besides ns/op it reports each boot's wall time from QEMU
// start and the init's own timeline split (KDF, mkfs, device waits, other),
// summed over iterations' means. Run: CRYPTINIT_VM=1 go test -run '^$' -bench VMBoot -benchtime 3x ./images/vm
func BenchmarkVMBoot(b *testing.B) {
	benchBoot(b, Direct, 1)
}

// BenchmarkVMBootTwoCPUs is BenchmarkVMBoot on two vCPUs (multi-threaded
// TCG: one host core each), the smallest machine Talos runs a control plane
// on: the background module loading gets a CPU of its own next to the
// single-lane test KDF instead of taking turns with it.
func BenchmarkVMBootTwoCPUs(b *testing.B) {
	benchBoot(b, Direct, 2)
}

// BenchmarkVMBootSecureBoot is BenchmarkVMBoot through OVMF with Secure Boot
// and a software TPM, the way the demo boots.
func BenchmarkVMBootSecureBoot(b *testing.B) {
	benchBoot(b, SecureBoot, 1)
}

func benchBoot(b *testing.B, fw Firmware, cpus int) {
	a := RequireInit(b)
	cfg := TestConfig(b, "basic.yaml")
	sums := map[string]float64{}
	for i := 0; i < b.N; i++ {
		n := NewNode(b, a, "bench", TalosLayout())
		n.TPM = fw != Direct
		for _, name := range []string{"first", "second"} {
			_, r := n.BootToRoot(BootOptions{Firmware: fw, Config: cfg, Cmdline: fastFail, CPUs: cpus})
			if err := r.Mounted("/var", "luks2-EPHEMERAL"); err != nil {
				b.Fatal(err)
			}
			sums[name+"-boot-s"] += r.Elapsed.Seconds()
			for k, v := range r.Split() {
				sums[name+"-"+k+"-ms"] += v
			}
		}
	}
	for k, v := range sums {
		b.ReportMetric(v/float64(b.N), k)
	}
}

// BenchmarkVMInitramfsCompression boots the smoke /init with the initramfs
// compressed as built (xz) and recompressed with zstd -19, alternating in one
// run, and reports the kernel's uptime when /init started for each: the cost
// of xz's smaller image in decompression time (TCG, direct kernel boot).
func BenchmarkVMInitramfsCompression(b *testing.B) {
	a := Require(b)
	cpio := filepath.Join(a.Dir, "initramfs.cpio")
	zst := filepath.Join(b.TempDir(), "initramfs.zst")
	if out, err := exec.Command("zstd", "-q", "-19", cpio, "-o", zst).CombinedOutput(); err != nil {
		b.Fatalf("zstd: %v: %s", err, out)
	}
	variants := []struct{ name, initrd string }{{"xz", a.Initramfs}, {"zstd", zst}}
	sums := map[string]float64{}
	for i := 0; i < b.N; i++ {
		for _, v := range variants {
			va := *a
			va.Initramfs = v.initrd
			n := NewNode(b, &va, "compress-"+v.name, TalosLayout())
			vm := n.BootSmoke(BootOptions{})
			line := vm.ExpectLine(`^SMOKE: init started`)
			vm.Wait(BootTimeout)
			up, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
			if err != nil {
				b.Fatalf("no uptime in %q", line)
			}
			sums[v.name] += up
		}
	}
	for _, v := range variants {
		st, _ := os.Stat(v.initrd)
		b.ReportMetric(sums[v.name]/float64(b.N), v.name+"-kernel-to-init-s")
		b.ReportMetric(float64(st.Size())/1e6, v.name+"-MB")
	}
	b.ReportMetric(sums["xz"]/sums["zstd"], "xz/zstd-time")
}
