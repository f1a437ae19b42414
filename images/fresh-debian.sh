#!/usr/bin/env bash
# fresh-debian.sh checks the README's quickstart on a fresh minimal Debian 12:
# it debootstraps one (minbase, with Debian's own Go 1.19 added, as a user
# who tried `apt-get install golang-go` would have), clones this repository
# into it and runs, as root in a chroot, exactly what the quickstart says
# before `make demo`: `apt-get install -y make`, then `make setup build`
# (setup installs the packages and the Go toolchain go.mod needs).
#
#   bash images/fresh-debian.sh [DIR]     # DIR defaults to /tmp/fresh-debian
#
# It needs root, debootstrap and a Debian mirror; it takes a few minutes and
# about 2 GB in DIR. The VM tests themselves need the host's /dev/kvm-less
# QEMU and are run by `make test` on the machine itself, not in the chroot.
set -euo pipefail
dir=${1:-/tmp/fresh-debian}
repo=$(cd "$(dirname "$0")/.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$dir/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase bookworm "$dir" "$mirror"
fi
mount_once() { mountpoint -q "$2" || mount "${@:3}" "$1" "$2"; }
mount_once proc "$dir/proc" -t proc
mount_once /dev "$dir/dev" --rbind --make-rslave
trap 'umount -R "$dir/dev" 2>/dev/null; umount "$dir/proc" 2>/dev/null || true' EXIT
cp /etc/resolv.conf "$dir/etc/resolv.conf"
# The site's own CAs (a TLS-intercepting egress proxy, say) go along, as
# they would be on any machine of that site.
mkdir -p "$dir/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/" 2>/dev/null || true

rm -rf "$dir/root/cryptinit"
git clone -q "$repo" "$dir/root/cryptinit"

chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -euo pipefail -c '
  export DEBIAN_FRONTEND=noninteractive
  dpkg --configure -a
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends golang-go git ca-certificates >/dev/null
  update-ca-certificates >/dev/null
  echo "fresh-debian: Debian Go before setup: $(go version)"
  # A DIR reused from an earlier run: take back what the quickstart adds.
  apt-get purge -y -qq make >/dev/null 2>&1 || true
  rm -rf /usr/local/go
  if command -v make >/dev/null; then echo "fresh-debian: make is already there"; exit 1; fi
  # The quickstart, as printed:
  apt-get update && apt-get install -y make
  cd /root/cryptinit
  make setup build
  echo "fresh-debian: Go after setup: $(PATH=/usr/local/go/bin:$PATH go version)"
  ls out/bin
'
echo "fresh-debian: ok"
