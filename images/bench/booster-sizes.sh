#!/bin/bash
# booster-sizes.sh: cryptinit's initramfs sizes side by side with booster's
# (https://github.com/anatol/booster, the peer issue 12 names), for the same
# kernel: the one `make image` unpacked under OUT/kernel (Debian's 6.1).
#
#   images/bench/booster-sizes.sh OUT [BOOSTER_SRC]
#
# BOOSTER_SRC (argument or env) is a git URL or path to booster's repository
# (default https://github.com/anatol/booster.git); BOOSTER_REF the commit or
# tag to build (default 0.13, its newest tag); BOOSTER_WORK where it is cloned
# and built (default ${TMPDIR:-/tmp}/cryptinit-booster-bench, outside our tree:
# booster's code is never copied into this repository). Its Go modules come
# from the Go module proxy. The generator is built as Arch packages it; the
# init too (CGO_ENABLED=1, so the generator adds the libc it links), stripped
# with -s -w as makepkg's strip would.
#
# The images, each raw (--compress none), xz and zstd:
#   virtio     ours: cryptctl image build --modules <the harness list of build.sh>;
#              booster: host mode with modules "-*,<every module in our virtio
#              image>", i.e. the same driver set, none of this host's drivers
#   universal  ours: cryptctl image build --universal;
#              booster: its `universal: true` config
#   universal+net booster only: universal plus `network: {dhcp: on}`, which
#              adds kernel/drivers/net/ethernet/ (our --universal has NIC drivers
#              for the KMS; booster's universal has none without network)
# Each tool compresses with its own compressor (ours: xz with the x86 BCJ
# filter, klauspost zstd at its best level; booster: ulikunitz/xz without BCJ,
# klauspost zstd at its default level); the last column puts both raw cpios
# through our xz, so it compares contents alone.
# Prints a markdown table to stdout (sizes in MB = 10^6 bytes); progress on stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(cd "${1:?usage: booster-sizes.sh OUT [BOOSTER_SRC]}" && pwd)
SRC=${2:-${BOOSTER_SRC:-https://github.com/anatol/booster.git}}
REF=${BOOSTER_REF:-0.13}
WORK=${BOOSTER_WORK:-${TMPDIR:-/tmp}/cryptinit-booster-bench}
GO=${GO:-go}
say() { echo "booster-sizes: $*" >&2; }

KVER=$(cat "$OUT/kernel.version")
MODDIR=$OUT/kernel/lib/modules/$KVER
for f in "$MODDIR/modules.dep" "$OUT/bin/cryptctl" "$OUT/bin/cryptinit" "$OUT/vmlinuz"; do
	[ -e "$f" ] || { say "missing $f: run make image OUT=$OUT first"; exit 1; }
done
# The harness's drivers, as images/build.sh passes them.
MODULES=$(sed -n 's/^MODULES=//p' "$ROOT/images/build.sh")
[ -n "$MODULES" ] || { say "no MODULES= line in images/build.sh"; exit 1; }

# --- booster: clone, check out, build (one at a time, niced) -----------------
mkdir -p "$WORK"
if [ ! -d "$WORK/src/.git" ]; then
	say "cloning $SRC"
	git clone --quiet "$SRC" "$WORK/src"
fi
if ! git -C "$WORK/src" rev-parse -q --verify "$REF^{commit}" >/dev/null; then
	git -C "$WORK/src" fetch --quiet --tags "$SRC"
fi
git -C "$WORK/src" -c advice.detachedHead=false checkout --quiet "$REF"
COMMIT=$(git -C "$WORK/src" rev-parse HEAD)
BIN=$WORK/bin/$COMMIT
if [ ! -x "$BIN/booster" ] || [ ! -x "$BIN/init" ]; then
	say "building booster $REF ($COMMIT)"
	mkdir -p "$BIN"
	(cd "$WORK/src/generator" && nice -n 19 "$GO" build -p 1 -trimpath -mod=readonly -o "$BIN/booster" .)
	(cd "$WORK/src/init" && CGO_ENABLED=1 nice -n 19 "$GO" build -p 1 -trimpath -mod=readonly \
		-ldflags='-s -w' -o "$BIN/init" .)
fi

# --- the images -----------------------------------------------------------------
I=$WORK/images
rm -rf "$I" && mkdir -p "$I"
ours() { # name, cryptctl flags...
	local name=$1 c
	shift
	for c in none xz zstd; do
		"$OUT/bin/cryptctl" image build --kernel-version "$KVER" --modules-dir "$MODDIR" \
			--vmlinuz "$OUT/vmlinuz" --init "$OUT/bin/cryptinit" "$@" --compress "$c" \
			-o "$I/ours-$name.$c" >/dev/null
	done
}
say "cryptctl image build: virtio ($MODULES) and --universal"
ours virtio --modules "$MODULES"
ours universal --universal

# The virtio set for booster: every module our virtio image holds (the harness
# drivers, cryptinit's base classes and their dependencies), nothing else.
mods() { cpio -it --quiet <"$1" | awk -F/ '/\.ko(\.[a-z0-9]+)?$/ {sub(/\.ko.*$/, "", $NF); print $NF}' | LC_ALL=C sort; }
VIRTIO_SET=$(mods "$I/ours-virtio.none" | tr - _ | paste -sd, -)
printf 'universal: false\nmodules: -*,%s\n' "$VIRTIO_SET" >"$I/booster-virtio.yaml"
printf 'universal: true\n' >"$I/booster-universal.yaml"
printf 'universal: true\nnetwork:\n  dhcp: on\n' >"$I/booster-universal+net.yaml"
: >"$I/crypttab" # no host crypttab goes in
for name in virtio universal universal+net; do
	say "booster build: $name"
	for c in none xz zstd; do
		nice -n 19 "$BIN/booster" build --force --init-binary "$BIN/init" \
			--kernel-version "$KVER" --modules-dir "$MODDIR" \
			--config "$I/booster-$name.yaml" --crypttab "$I/crypttab" \
			--compression "$c" "$I/booster-$name.$c" >&2
	done
done

# --- the table ------------------------------------------------------------------
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.2f", b / 1e6 }'; }
row() { # tool, image, file prefix
	# the contents alone: both raw cpios through the same xz (ours: x86 BCJ)
	nice -n 19 xz -T1 --x86 --lzma2=preset=6 --check=crc32 -c "$3.none" >"$3.samexz"
	printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$1" "$(mods "$3.none" | wc -l)" \
		"$(mb "$3.none")" "$(mb "$3.xz")" "$(mb "$3.zstd")" "$(mb "$3.samexz")"
}
ourcommit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
cat <<EOT
Kernel: Debian's $KVER (modules from \`$MODDIR\`).
cryptinit: commit $ourcommit, \`cryptctl image build\`. booster: $REF, commit $COMMIT,
generator and init built from source here (init CGO_ENABLED=1, -s -w, as Arch ships it).
Made by \`images/bench/booster-sizes.sh OUT\`; MB = 10^6 bytes. xz and zstd: each tool's
own compressor; same xz: both raw cpios through \`xz -T1 --x86 --lzma2=preset=6 --check=crc32\`.

| image | tool | modules | raw cpio MB | xz MB | zstd MB | same xz MB |
| --- | --- | --- | --- | --- | --- | --- |
EOT
row cryptinit "virtio (harness set)" "$I/ours-virtio"
row booster "virtio (harness set)" "$I/booster-virtio"
row cryptinit "universal" "$I/ours-universal"
row booster "universal" "$I/booster-universal"
row booster "universal + network dhcp" "$I/booster-universal+net"
