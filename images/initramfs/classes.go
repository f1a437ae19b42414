// Package initramfs builds cryptinit's initramfs in-process: it chooses the
// kernel modules (by driver class, from the running machine's devices, or
// by name), resolves their dependencies with the init's own resolver
// (boot/modules), and writes a reproducible newc cpio with the init, the
// mkfs tools and their libraries, compressed with fixed settings.
package initramfs

// Class is a named group of modules an image may need. The names are
// modules or aliases as modprobe takes them; dependencies are added.
type Class struct {
	Name    string
	Doc     string
	Modules []string
}

// Base is what cryptinit itself needs on every machine, whatever the
// hardware: device-mapper and the ciphers LUKS2 uses, the filesystems it
// makes and mounts, efivarfs (Secure Boot state for tpm keys) and vfat
// with Debian's default code pages (a machine config on the ESP).
var Base = []Class{
	{"crypto", "device-mapper, aes-xts and its accelerated drivers",
		[]string{"dm-mod", "dm-crypt", "xts", "ecb", "cryptd", "crypto_simd", "aesni-intel"}},
	{"filesystems", "xfs (STATE), ext4 (EPHEMERAL, the root), efivarfs, vfat for a config on the ESP",
		[]string{"efivarfs", "xfs", "ext4", "libcrc32c", "crc32c_generic", "crc32c-intel", "crc16", "jbd2", "mbcache",
			"vfat", "fat", "nls_cp437", "nls_ascii"}},
}

// Virtio is the QEMU/KVM class: the test harness's image has Base and this.
var Virtio = Class{"virtio", "virtio PCI disks (blk, scsi), network and entropy",
	[]string{"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio-rng"}}

// Universal is every driver class --universal ships on top of Base: the
// disks a server boots from, a USB keyboard for the recovery prompt, and
// the network cards that reach a KMS.
var Universal = []Class{
	{"storage", "NVMe, SATA on AHCI, SCSI disks, SD/eMMC, USB mass storage",
		[]string{"nvme", "ahci", "sd_mod", "mmc_block", "sdhci_pci", "sdhci_acpi", "usb-storage", "uas"}},
	Virtio,
	{"input", "USB host controllers and HID keyboards for the console prompt",
		[]string{"xhci_pci", "xhci_hcd", "ehci_pci", "ehci_hcd", "usbhid", "hid_generic"}},
	{"network", "server NICs for the KMS: Intel, Mellanox, Broadcom, Realtek",
		[]string{"e1000e", "igb", "ixgbe", "i40e", "ice", "mlx5_core", "bnxt_en", "r8169"}},
}
