package probe

import (
	"fmt"
	"io"
)

// Wipe zeroes what Probe looks at: the first 4 MiB + 4 KiB (every start
// signature, including LUKS2 secondary headers) and the last MiB, so that
// the partition then counts as empty. It is what the boot does for a META
// wipe request; data elsewhere is not overwritten (it is unreadable garbage
// to the new volume, and a full wipe would take hours).
func Wipe(w io.WriterAt, size int64) error {
	zero := make([]byte, 1<<20)
	wipe := func(off, n int64) error {
		for n > 0 {
			c := min(n, int64(len(zero)))
			if _, err := w.WriteAt(zero[:c], off); err != nil {
				return fmt.Errorf("wipe at %d: %w", off, err)
			}
			off, n = off+c, n-c
		}
		return nil
	}
	if err := wipe(0, min(size, wipeHeadSize)); err != nil {
		return err
	}
	if err := wipe(max(0, size-tailSize), min(size, tailSize)); err != nil {
		return err
	}
	if s, ok := w.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}
