// Command cryptinit is the PID 1 of the initramfs: it unlocks the node's
// LUKS2 volumes, mounts them and switch_roots into the real system. The
// sequence lives in package boot; see its documentation for the kernel
// command line options and the console line formats.
package main

import "github.com/cryptinit/cryptinit/boot"

func main() { boot.Main() }
