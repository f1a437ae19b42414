#!/usr/bin/env bash
# setup.sh installs everything the tests and the demo need on a fresh Debian 12,
# as root. It is idempotent: it installs only what is missing, so calling it at
# the start of every test run costs a second when nothing is missing.
set -euo pipefail

PKGS=(
  cryptsetup-bin          # cross-checks of our LUKS2 headers, both directions
  qemu-system-x86         # the VM that has the device-mapper this host lacks
  ovmf                    # UEFI firmware with Secure Boot
  swtpm swtpm-tools       # software TPM for host and boot tests
  systemd-boot-efi        # systemd-stub for the UKI; systemd-boot enrolls Secure Boot keys
  sbsigntool efitools     # Secure Boot signing; .auth files for enrollment
  dosfstools mtools       # the ESP's FAT image
  busybox-static          # the demo/test real root's userland
  xfsprogs e2fsprogs      # mkfs in the initramfs; debugfs edits test root images
  btrfs-progs squashfs-tools # real filesystems for the empty-partition probe tests
  libssl-dev gcc          # the go-tpm-tools TPM simulator (cgo)
  binutils                # objcopy assembles the UKI
  openssl cpio xz-utils zstd kmod iproute2 # keys, initramfs packing, depmod, netns tests
  ca-certificates         # apt-get download over https mirrors
  tang                    # the KMS benchmark's side-by-side comparison
  libtss2-esys-3.0.2-0 libtss2-rc0 # systemd-cryptenroll/-cryptsetup dlopen them for TPM2 support
  libtss2-tcti-swtpm0     # systemd-cryptenroll --tpm2-device=swtpm:host=...,port=... (interop tests)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tang pulls in a systemd socket unit; we start it by hand in benchmarks only.
command -v go >/dev/null || { echo "setup: Go toolchain not found on PATH" >&2; exit 1; }
go mod download
echo "setup: ok"
