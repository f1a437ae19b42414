package kms

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BenchmarkInitSize measures what the KMS client costs a static, stripped
// init: a trivial main, the same with this package's client, and with a
// grpc-go client doing the same call (testdata/size). The figures are
// binary sizes, reported side by side; b.N does not matter.
func BenchmarkInitSize(b *testing.B) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	root, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	size := func(name string) float64 {
		out := filepath.Join(dir, name)
		cmd := exec.Command(gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./netboot/kms/testdata/size/"+name)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", name, err, msg)
		}
		fi, err := os.Stat(out)
		if err != nil {
			b.Fatal(err)
		}
		return float64(fi.Size()) / 1e6
	}
	base, mini, grpcgo := size("base"), size("mini"), size("grpcgo")
	for range b.N {
	}
	b.ReportMetric(base, "base-MB")
	b.ReportMetric(mini-base, "client-added-MB")
	b.ReportMetric(grpcgo-base, "grpcgo-added-MB")
	b.ReportMetric((grpcgo-base)/(mini-base), "grpcgo/client-added")
}
