#!/bin/bash
# kdf.sh: the keyslot KDF as whole processes, what a boot pays: `cryptctl
# luks test-key` against `cryptsetup open --test-passphrase` on the same
# header (made by cryptsetup), interleaved pairs, medians. Prints one
# markdown table row per KDF: the ratios ours / cryptsetup of wall time and
# of CPU time (user + system; the steadier one on a shared machine), and
# the user, system and minor-fault figures behind them.
#
#   images/bench/kdf.sh [OUT] [PAIRS]     (defaults: out, 5)
set -euo pipefail
out=${1:-out}
pairs=${2:-5}
mkdir -p "$out/bin"
CGO_ENABLED=0 go build -trimpath -o "$out/bin/cryptctl" ./cmd/cryptctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'bench-passphrase' >"$work/key"

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# run LABEL CMD...: one timed run, appended to $work/LABEL as "wall user sys minflt"
run() {
	local label=$1
	shift
	/usr/bin/time -o "$work/t" -f '%e %U %S %R' "$@" >/dev/null 2>&1
	cat "$work/t" >>"$work/$label"
}

echo "| KDF (cryptsetup header) | ours / cryptsetup wall s | wall ratio | CPU ratio | ours user / sys s | cryptsetup user / sys s | ours / cryptsetup minor faults |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for spec in "argon2id 65536" "argon2id 524288" "argon2id 1048576" "pbkdf2 1000000"; do
	set -- $spec
	img=$work/h.img
	rm -f "$img" "$work/ours" "$work/cs"
	truncate -s 20M "$img"
	if [ "$1" = pbkdf2 ]; then
		cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations "$2" --key-file "$work/key" "$img"
		name="pbkdf2-sha256 $2 iterations"
	else
		cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory "$2" --pbkdf-force-iterations 4 --pbkdf-parallel 4 --key-file "$work/key" "$img"
		name="argon2id $(($2 / 1024)) MiB t4 p4"
	fi
	for _ in $(seq "$pairs"); do
		run cs cryptsetup open --test-passphrase --key-file "$work/key" "$img"
		run ours "$out/bin/cryptctl" luks test-key "$img" --key-file "$work/key"
	done
	col() { awk "{print \$$2}" "$work/$1" | median; }
	cpu() { awk '{print $2 + $3}' "$work/$1" | median; }
	ow=$(col ours 1) cw=$(col cs 1)
	printf '| %s | %s / %s | %.2f | %.2f | %s / %s | %s / %s | %s / %s |\n' "$name" "$ow" "$cw" \
		"$(echo "$ow $cw" | awk '{print $1/$2}')" "$(echo "$(cpu ours) $(cpu cs)" | awk '{print $1/$2}')" \
		"$(col ours 2)" "$(col ours 3)" "$(col cs 2)" "$(col cs 3)" "$(col ours 4)" "$(col cs 4)"
done
