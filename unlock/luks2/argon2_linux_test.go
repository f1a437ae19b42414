package luks2

import (
	"bytes"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestArgon2FaultsOncePerPage: a whole-process KDF pays a page fault per
// 4 KiB of argon2 memory, as cryptsetup does, not two. x/crypto/argon2
// XORed each new block into never-written memory (a read that maps the
// zero page, then a write that copies it) and took 2.0x the faults.
func TestArgon2FaultsOncePerPage(t *testing.T) {
	const memKiB = 64 << 10
	pages := int64(memKiB << 10 / unix.Getpagesize())
	var before, after unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &before); err != nil {
		t.Fatal(err)
	}
	if _, err := deriveKey(KDF{Type: "argon2id", Time: 1, Memory: memKiB, Parallel: 4, Salt: make([]byte, 32)}, []byte("pass"), 32); err != nil {
		t.Fatal(err)
	}
	if err := unix.Getrusage(unix.RUSAGE_SELF, &after); err != nil {
		t.Fatal(err)
	}
	faults := after.Minflt - before.Minflt
	t.Logf("%d minor faults for %d pages of argon2 memory", faults, pages)
	if faults > pages*5/4 {
		t.Errorf("%d minor faults for %d pages: more than one per page", faults, pages)
	}
}

// TestArgon2MemoryWiped: free wipes argon2's blocks before it unmaps them
// (the kernel zeroes a freed page only when it reuses it).
func TestArgon2MemoryWiped(t *testing.T) {
	for _, n := range []int{8, 16 << 10} { // 8 KiB, 16 MiB
		var unmapped, dirty int
		mem, free, err := mapArgon2Memory(n, func(m []byte) error {
			unmapped = len(m)
			zero := make([]byte, 1<<20)
			for off := 0; off < len(m); off += len(zero) {
				chunk := m[off:min(off+len(zero), len(m))]
				if !bytes.Equal(chunk, zero[:len(chunk)]) {
					dirty++
				}
			}
			return unix.Munmap(m)
		})
		if err != nil {
			t.Fatalf("map %d blocks: %v", n, err)
		}
		fillArgon2Memory(mem)
		free()
		if want := n * int(unsafe.Sizeof(argon2Block{})); unmapped != want {
			t.Fatalf("%d blocks: unmapped %d bytes, want %d", n, unmapped, want)
		}
		if dirty != 0 {
			t.Fatalf("%d blocks: %d MiB chunks not wiped before unmap", n, dirty)
		}
	}
}

func fillArgon2Memory(mem []argon2Block) {
	for i := range mem {
		for k := range mem[i] {
			mem[i][k] = ^uint64(k)
		}
	}
}

// BenchmarkArgon2MemoryWipe is what free's wipe costs at 1 GiB (pages
// faulted in and dirty, as after a KDF): "wipe" alone, "unmap" the rest.
func BenchmarkArgon2MemoryWipe(b *testing.B) {
	const n = 1 << 20 // 1 GiB
	var wipe, unmap time.Duration
	for b.Loop() {
		var wiped time.Time
		mem, free, err := mapArgon2Memory(n, func(m []byte) error {
			wiped = time.Now()
			return unix.Munmap(m)
		})
		if err != nil {
			b.Fatal(err)
		}
		fillArgon2Memory(mem)
		start := time.Now()
		free()
		wipe += wiped.Sub(start)
		unmap += time.Since(wiped)
	}
	b.ReportMetric(float64(wipe.Milliseconds())/float64(b.N), "ms-wipe/GiB")
	b.ReportMetric(float64(unmap.Milliseconds())/float64(b.N), "ms-unmap/GiB")
}
