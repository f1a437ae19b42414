package vm

import (
	"testing"
)

// BenchmarkVMBoot measures, per iteration, a node's first boot (formats STATE
// and EPHEMERAL) and second boot (reopens them) to the real root, direct
// kernel boot, TCG. Besides ns/op it reports each boot's wall time from QEMU
// start and the init's own timeline split (KDF, mkfs, device waits, other),
// summed over iterations' means. Run: CRYPTINIT_VM=1 go test -run '^$' -bench VMBoot -benchtime 3x ./images/vm
func BenchmarkVMBoot(b *testing.B) {
	benchBoot(b, Direct)
}

// BenchmarkVMBootSecureBoot is BenchmarkVMBoot through OVMF with Secure Boot
// and a software TPM, the way the demo boots.
func BenchmarkVMBootSecureBoot(b *testing.B) {
	benchBoot(b, SecureBoot)
}

func benchBoot(b *testing.B, fw Firmware) {
	a := RequireInit(b)
	cfg := TestConfig(b, "basic.yaml")
	sums := map[string]float64{}
	for i := 0; i < b.N; i++ {
		n := NewNode(b, a, "bench", TalosLayout())
		n.TPM = fw != Direct
		for _, name := range []string{"first", "second"} {
			_, r := n.BootToRoot(BootOptions{Firmware: fw, Config: cfg, Cmdline: fastFail})
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
