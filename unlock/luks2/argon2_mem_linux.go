package luks2

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// argon2Memory maps n blocks of anonymous memory for argon2 outside the Go
// heap; free unmaps it, and the kernel zeroes the pages before anyone else
// sees them. The heap would do the same job at the same fault cost now that
// argon2G writes before it reads, but it would keep the blocks (the work
// memory of a secret) until the runtime scavenges them.
//
// No MADV_HUGEPAGE: measured on the 2-core Firecracker host of the
// benchmarks (images/bench/kdf.sh), 2 MiB pages cut the 512 MiB KDF's
// faults from 131,000 to 1,100 and its user time by 15-20 %, but raised
// its system time from 0.3 to 1.6 s, because the free huge pages had been
// handed back to the hypervisor (page_reporting) and each one faulted in
// again there; 4 KiB pages come from the recently freed ones.
func argon2Memory(n int) (mem []argon2Block, free func(), err error) {
	size := n * int(unsafe.Sizeof(argon2Block{}))
	m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, err
	}
	mem = unsafe.Slice((*argon2Block)(unsafe.Pointer(&m[0])), n)
	return mem, func() { _ = unix.Munmap(m) }, nil
}
