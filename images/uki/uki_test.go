package uki

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptinit/cryptinit/internal/testenv"
)

func TestLayoutNoOverlapAfterStub(t *testing.T) {
	if _, err := os.Stat(DefaultStub); err != nil {
		testenv.Missing(t, "systemd-stub not installed (systemd-boot-efi; images/setup.sh installs it)")
	}
	dir := t.TempDir()
	file := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec := Spec{Linux: file("linux", 5<<20+3), Initrd: file("initrd", 3<<20+1), OSRel: file("osrel", 77)}
	for _, withPCR := range []bool{false, true} {
		if withPCR {
			spec.PCRKey, spec.PCRSig = file("pkey", 451), file("sig", 900)
		}
		secs, err := Layout(spec, file("cmdline", 60))
		if err != nil {
			t.Fatal(err)
		}
		want := 4
		if withPCR {
			want = 6
		}
		if len(secs) != want {
			t.Fatalf("%d sections, want %d", len(secs), want)
		}
		var end uint64
		for _, s := range secs {
			if s.VMA < end || s.VMA%pageAlign != 0 {
				t.Errorf("%s at 0x%x overlaps or is unaligned (previous end 0x%x)", s.Name, s.VMA, end)
			}
			end = s.VMA + uint64(s.Size)
		}
		if secs[len(secs)-1].Name != ".linux" {
			t.Errorf("last section %s, want .linux", secs[len(secs)-1].Name)
		}
		if withPCR {
			continue
		}
		// Adding .pcrpkey/.pcrsig later must not move .initrd and .linux.
		spec2 := spec
		spec2.PCRKey, spec2.PCRSig = file("pkey", 451), file("sig", 900)
		secs2, _ := Layout(spec2, file("cmdline", 60))
		if secs2[4].VMA != secs[2].VMA || secs2[5].VMA != secs[3].VMA {
			t.Errorf("PCR sections moved .initrd/.linux: %x %x vs %x %x", secs2[4].VMA, secs2[5].VMA, secs[2].VMA, secs[3].VMA)
		}
	}
}
