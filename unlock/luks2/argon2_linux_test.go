package luks2

import (
	"testing"

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
