#!/usr/bin/env bash
# build.sh makes everything a VM boot needs, under OUT (default ./out):
#
#   OUT/vmlinuz                 Debian's kernel (linux-image-6.1.*-amd64, unpacked, not installed)
#   OUT/initramfs.img           cryptinit as /init + kernel modules + mkfs.xfs/mkfs.ext4 + dash as /bin/sh (xz)
#   OUT/root.ext4               the tiny real root (busybox + /sbin/init that writes markers)
#   OUT/smoke-overlay.cpio      an /init that only proves the pipeline (harness self-test)
#   OUT/keys/                   test Secure Boot keys (PK, KEK, db) made here, never committed
#   OUT/cryptinit.efi           the UKI on systemd-stub, signed with the db key
#   OUT/universal/cryptinit.efi the same UKI with real machines' disk, USB and NIC drivers
#   OUT/BOOTX64.EFI             systemd-boot signed with the db key (used to enroll keys)
#   OUT/OVMF_VARS_enrolled.fd   OVMF variables with our PK/KEK/db enrolled (Secure Boot on)
#
# Every step skips work already done, so a second `make image` is quick.
# Environment: CONFIG=path embeds a machine config at /etc/cryptinit/config.yaml;
# CMDLINE overrides the kernel command line baked into the UKI.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/out}" && cd "${1:-$ROOT/out}" && pwd)
GO=${GO:-go}
cd "$ROOT"

say() { echo "image: $*"; }

# The kernel command line every boot uses; images/README.md explains each word.
CMDLINE=${CMDLINE:-"console=ttyS0 loglevel=4 root=PARTLABEL=ROOT rootfstype=ext4 ro"}

# Modules cryptinit loads itself (no udev, no modprobe in the initramfs).
# Dependencies and soft dependencies are added from the kernel's own tables.
MODULES=(
  virtio_pci virtio_blk virtio_net virtio-rng failover net_failover
  dm-mod dm-crypt xts ecb cryptd crypto_simd aesni-intel
  efivarfs xfs ext4 libcrc32c crc32c_generic crc32c-intel crc16 jbd2 mbcache
  # vfat for cryptinit.config=PARTLABEL=<ESP>:/path; mounting vfat loads the
  # kernel's default codepage (437) and iocharset (ascii) NLS tables, and the
  # kernel cannot request them itself (no modprobe in the initramfs).
  vfat fat nls_cp437 nls_ascii
)

mkdir -p "$OUT/cache" "$OUT/bin" "$OUT/keys"

# --- kernel -----------------------------------------------------------------
# linux-image-amd64 is a meta package; its dependency names the real package.
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6\.1/ {print $2; exit}'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ] && ! ls "$OUT"/cache/linux-image-6.1.*-amd64_*.deb >/dev/null 2>&1; then
  say "apt lists do not know linux-image-amd64: apt-get update"
  apt-get update -qq
  KPKG=$(kpkg)
fi
if [ -z "$KPKG" ]; then
  deb=$(ls "$OUT"/cache/linux-image-6.1.*-amd64_*.deb 2>/dev/null | tail -1 || true)
  [ -n "$deb" ] || { echo "image: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
  KPKG=$(basename "$deb" | cut -d_ -f1)
fi
KVER=${KPKG#linux-image-}
deb=$(ls "$OUT"/cache/"${KPKG}"_*.deb 2>/dev/null | tail -1 || true)
if [ -z "$deb" ]; then
  say "downloading $KPKG"
  (cd "$OUT/cache" && apt-get download "$KPKG" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  deb=$(ls "$OUT"/cache/"${KPKG}"_*.deb | tail -1)
fi
KROOT=$OUT/kernel
if [ ! -f "$KROOT/boot/vmlinuz-$KVER" ] || [ "$deb" -nt "$KROOT/boot/vmlinuz-$KVER" ]; then
  say "unpacking $(basename "$deb")"
  rm -rf "$KROOT" && mkdir -p "$KROOT"
  dpkg-deb -x "$deb" "$KROOT"
  depmod -b "$KROOT" "$KVER"
  touch "$KROOT/boot/vmlinuz-$KVER"
fi
cp -u "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel.version"

# --- tools ------------------------------------------------------------------
# mkuimage is pinned by the project's go.mod (images/tools/tools.go keeps it there).
if [ ! -x "$OUT/bin/mkuimage" ] || [ go.mod -nt "$OUT/bin/mkuimage" ]; then
  say "building mkuimage (pinned in go.mod)"
  $GO build -o "$OUT/bin/mkuimage" github.com/u-root/mkuimage/cmd/mkuimage
fi
$GO build -o "$OUT/bin/mkuki" ./images/cmd/mkuki

# --- init -------------------------------------------------------------------
INIT_PKG=${INIT_PKG:-./cmd/cryptinit}
say "building $INIT_PKG (CGO_ENABLED=0, -s -w)"
rm -f "$OUT/bin/cryptinit"
if ! CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o "$OUT/bin/cryptinit" "$INIT_PKG"; then
  # Keep building so the harness self-test (smoke overlay) still runs; every
  # cryptinit scenario will fail on "no /init", which is the truth.
  echo "image: WARNING: $INIT_PKG does not build; the initramfs has NO /init" >&2
fi

# --- initramfs ----------------------------------------------------------------
STAGE=$OUT/stage/initramfs
rm -rf "$STAGE" && mkdir -p "$STAGE"/{etc/cryptinit,proc,sys,dev,run,tmp,sysroot}
mdir=lib/modules/$KVER
mkdir -p "$STAGE/$mdir"
for m in "${MODULES[@]}"; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
  rel=${ko#"$KROOT"/}
  mkdir -p "$STAGE/$(dirname "$rel")"
  cp "$ko" "$STAGE/$rel"
done
cp "$KROOT/$mdir"/modules.{builtin,builtin.modinfo,order} "$STAGE/$mdir/"
depmod -b "$STAGE" "$KVER"
# The init reads the text tables; the binary indexes only serve modprobe.
rm -f "$STAGE/$mdir"/*.bin
cp /etc/mke2fs.conf "$STAGE/etc/mke2fs.conf"
if [ -n "${CONFIG:-}" ]; then
  say "embedding machine config $CONFIG at /etc/cryptinit/config.yaml"
  cp "$CONFIG" "$STAGE/etc/cryptinit/config.yaml"
fi

files=()
[ -f "$OUT/bin/cryptinit" ] && files+=(-files "$OUT/bin/cryptinit:init")
for top in "$STAGE"/*; do files+=(-files "$top:$(basename "$top")"); done
# Binaries given by path bring their shared libraries with them (ldd).
files+=(-files /usr/sbin/mkfs.xfs:sbin/mkfs.xfs -files /usr/sbin/mke2fs:sbin/mkfs.ext4)
# Debian's dash is the cryptinit.debug=shell shell (only after a failed boot);
# it needs only the libc already there for mkfs (~55 KB xz).
files+=(-files /usr/bin/dash:bin/sh)
say "packing the initramfs with mkuimage"
"$OUT/bin/mkuimage" -base=/dev/null -nocmd -initcmd= -defaultsh= "${files[@]}" \
  -o "$OUT/initramfs.cpio.new" 2>"$OUT/mkuimage.log" || { cat "$OUT/mkuimage.log" >&2; exit 1; }
# mkuimage output is reproducible (zero times): skip the slow compression when
# nothing changed since the last build.
if [ -f "$OUT/initramfs.img" ] && [ "$OUT/initramfs.img" -nt "$OUT/initramfs.cpio" ] &&
  [ "${COMPRESS:-xz}" = "$(cat "$OUT/initramfs.compress" 2>/dev/null)" ] &&
  cmp -s "$OUT/initramfs.cpio.new" "$OUT/initramfs.cpio"; then
  rm "$OUT/initramfs.cpio.new"
  fresh=0
else
  mv "$OUT/initramfs.cpio.new" "$OUT/initramfs.cpio"
  fresh=1
fi
# xz with the x86 BCJ filter is ~10% smaller than zstd -19 here (budget: 6 MB);
# COMPRESS=zstd trades that for a faster build and decompression.
if [ "$fresh" = 1 ]; then
  case "${COMPRESS:-xz}" in
    xz) xz -T1 --x86 --lzma2=preset=6 --check=crc32 -c "$OUT/initramfs.cpio" >"$OUT/initramfs.img.tmp" ;;
    zstd) zstd -q -f -19 "$OUT/initramfs.cpio" -o "$OUT/initramfs.img.tmp" ;;
    *) echo "image: COMPRESS must be xz or zstd" >&2; exit 1 ;;
  esac
  mv "$OUT/initramfs.img.tmp" "$OUT/initramfs.img"
  echo "${COMPRESS:-xz}" >"$OUT/initramfs.compress"
else
  say "initramfs unchanged: keeping $OUT/initramfs.img"
fi

# --- the real root for tests and the demo ---------------------------------------
RSTAGE=$OUT/stage/root
rm -rf "$RSTAGE" && mkdir -p "$RSTAGE"/{bin,sbin,etc,proc,sys,dev,run,tmp,var,system/state}
cp /usr/bin/busybox "$RSTAGE/bin/busybox"
for a in $(/usr/bin/busybox --list); do
  [ "$a" = busybox ] || ln -sf busybox "$RSTAGE/bin/$a"
done
install -m 0755 images/root/init "$RSTAGE/sbin/init"
rm -f "$OUT/root.ext4"
mkfs.ext4 -q -F -L ROOT -E root_owner=0:0 -d "$RSTAGE" "$OUT/root.ext4" 16M >/dev/null

# --- the smoke overlay: an /init that proves kernel, modules, disks, TPM, SB ---
SSTAGE=$OUT/stage/smoke
rm -rf "$SSTAGE" && mkdir -p "$SSTAGE/bin" "$SSTAGE/etc"
cp /usr/bin/busybox "$SSTAGE/bin/busybox"
install -m 0755 images/root/smoke-init "$SSTAGE/init"
for m in "${MODULES[@]}"; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {sub("^'"$KROOT"'", "", $2); print $2}' | awk '!seen[$0]++' >"$SSTAGE/etc/smoke-modules"
(cd "$SSTAGE" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 >"$OUT/smoke-overlay.cpio")

# --- Secure Boot test keys ----------------------------------------------------
K=$OUT/keys
if [ ! -f "$K/db.auth" ]; then
  say "making test Secure Boot keys in $K"
  guid=$(cat /proc/sys/kernel/random/uuid)
  echo "$guid" >"$K/guid"
  for n in PK KEK db; do
    openssl req -quiet -newkey rsa:2048 -nodes -keyout "$K/$n.key" -new -x509 -sha256 -days 3650 \
      -subj "/CN=cryptinit test $n/" -out "$K/$n.crt" 2>/dev/null
    cert-to-efi-sig-list -g "$guid" "$K/$n.crt" "$K/$n.esl"
  done
  sign-efi-sig-list -g "$guid" -k "$K/PK.key" -c "$K/PK.crt" PK "$K/PK.esl" "$K/PK.auth" >/dev/null
  sign-efi-sig-list -g "$guid" -k "$K/PK.key" -c "$K/PK.crt" KEK "$K/KEK.esl" "$K/KEK.auth" >/dev/null
  sign-efi-sig-list -g "$guid" -k "$K/KEK.key" -c "$K/KEK.crt" db "$K/db.esl" "$K/db.auth" >/dev/null
  rm -f "$OUT/OVMF_VARS_enrolled.fd"
fi

# kms-server serves the VM tests' kms keys (best effort: tests skip without it).
rm -f "$OUT/bin/kms-server"
CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o "$OUT/bin/kms-server" ./cmd/kms-server 2>/dev/null ||
  say "cmd/kms-server does not build: KMS VM tests will skip"

# --- UKI ---------------------------------------------------------------------
# The PCR policy signature (.pcrpkey, .pcrsig) comes from `cryptctl pcr sign`
# (tpm/); without it TPM keys cannot unseal, everything else still boots.
pcrflags=()
rm -f "$OUT/bin/cryptctl"
if CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o "$OUT/bin/cryptctl" ./cmd/cryptctl 2>/dev/null &&
  "$OUT/bin/cryptctl" pcr sign --help >/dev/null 2>&1; then
  if [ ! -f "$K/pcr-key.pem" ]; then
    "$OUT/bin/cryptctl" pcr genkey --out "$K/pcr-key.pem" --pub "$K/pcr-key.pub.pem" >/dev/null
  fi
  pcrflags=(-cryptctl "$OUT/bin/cryptctl" -pcr-key "$K/pcr-key.pem")
  say "assembling the UKI, signing its PCR 11 policy (cryptctl pcr sign) and signing it for Secure Boot"
else
  rm -f "$OUT/bin/cryptctl" "$K/pcr-key.pem"
  say "cryptctl pcr sign is not available: UKI without .pcrpkey/.pcrsig (TPM keys will not unseal)"
fi
"$OUT/bin/mkuki" -stub /usr/lib/systemd/boot/efi/linuxx64.efi.stub -linux "$OUT/vmlinuz" \
  -initrd "$OUT/initramfs.img" -cmdline "$CMDLINE" -osrel images/root/os-release \
  "${pcrflags[@]}" -key "$K/db.key" -cert "$K/db.crt" -o "$OUT/cryptinit.efi"

# --- universal UKI (interim: `cryptctl image build --universal` replaces this) --
# The same init, config, kernel and keys as cryptinit.efi plus the drivers of
# real machines' disks (NVMe, AHCI, SCSI, USB storage), a USB keyboard for the
# console prompt and an Intel NIC for the KMS: the hardware matrix VM tests
# (images/vm/hardware_test.go) boot it. zstd: the universal budget is in zstd.
UNIVERSAL_MODULES=(
  nvme ahci sd_mod virtio_scsi usb-storage uas xhci_pci xhci_hcd ehci_pci
  usbhid hid_generic e1000e
)
USTAGE=$OUT/stage/universal
rm -rf "$USTAGE" && cp -a "$STAGE" "$USTAGE" && mkdir -p "$OUT/universal"
for m in "${UNIVERSAL_MODULES[@]}"; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
  rel=${ko#"$KROOT"/}
  mkdir -p "$USTAGE/$(dirname "$rel")"
  cp "$ko" "$USTAGE/$rel"
done
depmod -b "$USTAGE" "$KVER"
rm -f "$USTAGE/$mdir"/*.bin
ufiles=()
[ -f "$OUT/bin/cryptinit" ] && ufiles+=(-files "$OUT/bin/cryptinit:init")
for top in "$USTAGE"/*; do ufiles+=(-files "$top:$(basename "$top")"); done
ufiles+=(-files /usr/sbin/mkfs.xfs:sbin/mkfs.xfs -files /usr/sbin/mke2fs:sbin/mkfs.ext4 -files /usr/bin/dash:bin/sh)
say "packing the universal initramfs"
"$OUT/bin/mkuimage" -base=/dev/null -nocmd -initcmd= -defaultsh= "${ufiles[@]}" \
  -o "$OUT/universal/initramfs.cpio.new" 2>"$OUT/universal/mkuimage.log" || { cat "$OUT/universal/mkuimage.log" >&2; exit 1; }
if [ -f "$OUT/universal/initramfs.img" ] && cmp -s "$OUT/universal/initramfs.cpio.new" "$OUT/universal/initramfs.cpio"; then
  rm "$OUT/universal/initramfs.cpio.new"
else
  mv "$OUT/universal/initramfs.cpio.new" "$OUT/universal/initramfs.cpio"
  zstd -q -f -19 "$OUT/universal/initramfs.cpio" -o "$OUT/universal/initramfs.img"
fi
"$OUT/bin/mkuki" -stub /usr/lib/systemd/boot/efi/linuxx64.efi.stub -linux "$OUT/vmlinuz" \
  -initrd "$OUT/universal/initramfs.img" -cmdline "$CMDLINE" -osrel images/root/os-release \
  "${pcrflags[@]}" -key "$K/db.key" -cert "$K/db.crt" -o "$OUT/universal/cryptinit.efi"
say "universal: initramfs $(stat -c %s "$OUT/universal/initramfs.img") bytes (zstd); UKI $(stat -c %s "$OUT/universal/cryptinit.efi") bytes"

if [ ! -f "$OUT/BOOTX64.EFI" ] || [ "$K/db.key" -nt "$OUT/BOOTX64.EFI" ]; then
  sbsign --key "$K/db.key" --cert "$K/db.crt" --output "$OUT/BOOTX64.EFI" \
    /usr/lib/systemd/boot/efi/systemd-bootx64.efi 2>/dev/null
fi

# --- Secure Boot enrollment (once per key set) ---------------------------------
if [ ! -f "$OUT/OVMF_VARS_enrolled.fd" ]; then
  say "enrolling the test keys into OVMF (one boot of systemd-boot)"
  E=$OUT/stage/enroll
  rm -rf "$E" && mkdir -p "$E"
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$E/vars.fd"
  printf 'timeout 0\nsecure-boot-enroll force\n' >"$E/loader.conf"
  truncate -s 32M "$E/esp.img"
  mkfs.vfat -n ESP "$E/esp.img" >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$E/esp.img" ::/EFI ::/EFI/BOOT ::/loader ::/loader/keys ::/loader/keys/auto
  mcopy -i "$E/esp.img" "$OUT/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$E/esp.img" "$E/loader.conf" ::/loader/loader.conf
  mcopy -i "$E/esp.img" "$K/PK.auth" "$K/KEK.auth" "$K/db.auth" ::/loader/keys/auto/
  timeout 180 qemu-system-x86_64 -machine q35,smm=on -m 256 -nographic -no-reboot \
    -global driver=cfi.pflash01,property=secure,value=on \
    -drive if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd,readonly=on \
    -drive if=pflash,format=raw,unit=1,file="$E/vars.fd" \
    -drive file="$E/esp.img",if=none,id=esp,format=raw -device virtio-blk-pci,drive=esp,bootindex=0 \
    -serial file:"$E/console.log" -monitor none -display none </dev/null >/dev/null 2>&1 || true
  if ! grep -q -i "enroll" "$E/console.log" && cmp -s /usr/share/OVMF/OVMF_VARS_4M.fd "$E/vars.fd"; then
    echo "image: Secure Boot enrollment left OVMF_VARS unchanged; console:" >&2
    tail -20 "$E/console.log" >&2
    exit 1
  fi
  cp "$E/vars.fd" "$OUT/OVMF_VARS_enrolled.fd"
fi

# --- sizes ------------------------------------------------------------------
initsize=$(stat -c %s "$OUT/bin/cryptinit" 2>/dev/null || echo "MISSING,")
say "init $initsize bytes; initramfs $(stat -c %s "$OUT/initramfs.cpio") bytes, $(stat -c %s "$OUT/initramfs.img") compressed (${COMPRESS:-xz}); UKI $(stat -c %s "$OUT/cryptinit.efi") bytes"
say "ok ($OUT)"
