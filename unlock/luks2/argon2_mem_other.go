//go:build !linux

package luks2

// argon2Memory allocates argon2's blocks on the Go heap where we have no
// mapping of our own (see the Linux version); free wipes them.
func argon2Memory(n int) ([]argon2Block, func(), error) {
	mem := make([]argon2Block, n)
	return mem, func() { clear(mem) }, nil
}
