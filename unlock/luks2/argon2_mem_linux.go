package luks2

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// argon2Memory maps n blocks of anonymous memory for argon2 outside the Go
// heap; free wipes them and unmaps them. The wipe is ours because the
// kernel zeroes a freed page only when it hands it out again: until then
// the blocks (the last column determines the key) sit in free RAM. It
// costs one write pass over pages already faulted in: 80 ms a GiB, the
// unmap itself 63 ms (BenchmarkArgon2MemoryWipe on the 2-core build host),
// against seconds of KDF. The heap would do the
// mapping's job at the same fault cost now that argon2G writes before it
// reads, but it would keep the blocks until the runtime scavenges them.
//
// No MADV_HUGEPAGE: measured on the 2-core Firecracker host of the
// benchmarks (images/bench/kdf.sh), 2 MiB pages cut the 512 MiB KDF's
// faults from 131,000 to 1,100 and its user time by 15-20 %, but raised
// its system time from 0.3 to 1.6 s, because the free huge pages had been
// handed back to the hypervisor (page_reporting) and each one faulted in
// again there; 4 KiB pages come from the recently freed ones.
func argon2Memory(n int) (mem []argon2Block, free func(), err error) {
	return mapArgon2Memory(n, unix.Munmap)
}

// mapArgon2Memory is argon2Memory with the unmap it calls, so a test can
// see what free hands to it.
func mapArgon2Memory(n int, munmap func([]byte) error) (mem []argon2Block, free func(), err error) {
	size := n * int(unsafe.Sizeof(argon2Block{}))
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, err
	}
	mem = unsafe.Slice((*argon2Block)(unsafe.Pointer(&m[0])), n)
	return mem, func() {
		clear(m)
		_ = munmap(m)
	}, nil
}
