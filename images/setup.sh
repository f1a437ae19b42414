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
  osslsigncode            # Secure Boot signing with a fixed signing time: reproducible UKIs
  dosfstools mtools       # the ESP's FAT image
  busybox-static          # the demo/test real root's userland
  xfsprogs e2fsprogs      # mkfs in the initramfs; debugfs edits test root images
  btrfs-progs squashfs-tools # real filesystems for the empty-partition probe tests
  libssl-dev gcc          # the go-tpm-tools TPM simulator (cgo)
  binutils                # objcopy assembles the UKI
  groff-base              # cryptctl man pages are checked with groff
  openssl cpio xz-utils zstd kmod iproute2 # keys, initramfs packing, depmod, netns tests
  ca-certificates         # apt-get download over https mirrors
  tang                    # the KMS benchmark's side-by-side comparison
  make git curl unzip     # the Makefile itself; fetching the Go toolchain (below)
  clevis-luks             # clevis luks bind: clevis-bound LUKS2 slots we must open
  clevis-tpm2             # clevis's tpm2 pin (drives tpm2-tools)
  tpm2-tools              # what clevis-tpm2 runs against the swtpm
  libtss2-tcti-swtpm0     # TPM2TOOLS_TCTI=swtpm:... for tpm2-tools
  fdisk                   # sfdisk: the README's request-a-wipe session partitions a disk image
  libtss2-esys-3.0.2-0 libtss2-rc0 # systemd-cryptenroll/-cryptsetup dlopen them for TPM2 support
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

# Go: go.mod needs GO_VERSION; Debian 12's golang-go is 1.19. When the go on
# PATH (after /usr/local/go/bin, where we install) is missing or older, fetch
# the official toolchain from the Go module proxy (the same zip `GOTOOLCHAIN`
# downloads) and check it against the digest pinned here before installing it
# in /usr/local/go. The Makefile puts /usr/local/go/bin first on PATH.
GO_VERSION=1.26.8
GO_ZIP_SHA256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7 # linux-amd64
export PATH="/usr/local/go/bin:$PATH"
go_ok() {
  command -v go >/dev/null || return 1
  local have
  have=$(go env GOVERSION 2>/dev/null || true) # "go1.26.8"; go1.19 has it too
  have=${have#go}
  [ -n "$have" ] || return 1
  # Sort the two versions; ours is new enough when the wanted one sorts first.
  [ "$(printf '%s\n%s\n' "$GO_VERSION" "$have" | sort -V | head -n1)" = "$GO_VERSION" ]
}
if ! go_ok; then
  [ "$(uname -m)" = x86_64 ] || { echo "setup: install Go >= $GO_VERSION yourself (only linux-amd64 is fetched here)" >&2; exit 1; }
  echo "setup: installing Go $GO_VERSION into /usr/local/go (found: $(command -v go >/dev/null && go env GOVERSION || echo none))"
  proxy=${GOPROXY_URL:-https://proxy.golang.org}
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
  echo "$GO_ZIP_SHA256  $tmp/go.zip" | sha256sum -c --quiet - ||
    { echo "setup: the Go toolchain zip does not match its pinned digest; not installed" >&2; exit 1; }
  unzip -q "$tmp/go.zip" -d "$tmp/x"
  rm -rf /usr/local/go
  mv "$tmp/x/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64" /usr/local/go
  chmod -R a+rX /usr/local/go
  chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
  go_ok || { echo "setup: Go $GO_VERSION did not install" >&2; exit 1; }
fi
go mod download
echo "setup: ok ($(go env GOVERSION))"
