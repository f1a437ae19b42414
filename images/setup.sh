#!/usr/bin/env bash
# setup.sh installs everything the tests and the demo need on a fresh Debian 12,
# as root. It is idempotent: it installs only what is missing, so calling it at
# the start of every test run costs a second when nothing is missing.
set -euo pipefail

PKGS=(
  cryptsetup-bin        
  qemu-system-x86       
  ovmf                  
  swtpm swtpm-tools     
  systemd-boot-efi      
  sbsigntool efitools   
  dosfstools mtools     
  busybox-static        
  xfsprogs e2fsprogs    
  libssl-dev gcc        
  binutils              
  openssl cpio xz-utils zstd kmod iproute2
  ca-certificates
  tang                  
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
