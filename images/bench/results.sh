#!/bin/bash
# results.sh: writes the results file of `make bench` (markdown) to stdout,
# from the outputs of one run: the machine and commit it ran on, the
# whole-process KDF table of kdf.sh, the image sizes next to booster's of
# booster-sizes.sh (when given), and every Go benchmark line, each under
# the command that made it. The README's "Measured" section quotes this file.
#
#   images/bench/results.sh GO_BENCH_OUTPUT KDF_TABLE [BOOSTER_SIZES]
set -euo pipefail
gobench=$1
kdf=$2
sizes=${3:-}
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then
	commit="$commit (with uncommitted changes)"
fi
cat <<EOT
# cryptinit benchmark results

- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) vCPUs
- kernel: $(uname -sr)
- commit: $commit
- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)

## KDF as whole processes

\`images/bench/kdf.sh\`: \`cryptctl luks test-key\` against \`cryptsetup open
--test-passphrase\` on the same header made by cryptsetup, interleaved pairs,
medians; ratio = ours / cryptsetup (below 1: we are faster).

EOT
cat "$kdf"
if [ -n "$sizes" ]; then
	cat <<'EOT'

## Initramfs sizes against booster

`images/bench/booster-sizes.sh OUT`: `cryptctl image build` and booster's
generator, built from source, for the same kernel and the same driver sets.

EOT
	cat "$sizes"
fi
cat <<'EOT'

## Go benchmarks

`CRYPTINIT_VM=1 go test -p 1 -run '^$' -bench . -benchtime 3x ./...`; one row
per benchmark, its metrics as Go reports them (ns/op is the wall time of one
iteration).

| package | benchmark | metrics |
| --- | --- | --- |
EOT
awk '
/^pkg: / { pkg = $2; sub("github.com/cryptinit/cryptinit/", "", pkg) }
/^Benchmark/ && NF >= 4 {
	m = ""
	for (i = 3; i + 1 <= NF; i += 2) m = m (m == "" ? "" : ", ") $i " " $(i + 1)
	printf "| %s | %s | %s |\n", pkg, $1, m
}' "$gobench"
