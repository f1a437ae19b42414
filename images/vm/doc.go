// Package vm boots cryptinit under QEMU (TCG) the way a node boots: Debian's
// kernel, our initramfs or signed UKI, OVMF with Secure Boot, a software TPM
// and GPT disk images made here. Tests describe a node in a few lines (disks,
// config, firmware), boot it, and wait for console lines.
//
// Everything it starts is killed and every file it makes is removed when the
// test ends (t.Cleanup, process groups). It needs the artifacts of `make image`
// (see images/README.md) and runs only when CRYPTINIT_VM=1.
package vm
