#!/bin/bash
# SPDX-License-Identifier: MIT
# The main job end to end on a generated sample disk, each step printed as the
# shell command it runs: a raw disk with data and holes becomes a qcow2 base,
# an overlay on it takes new writes, the chain is inspected (info, map,
# check), flattened to raw and converted back to qcow2, and the results are
# compared with img and, when it is installed, with qemu-img. Works in a temp
# dir that it removes; exits non-zero at the first failing step.
# Usage: scripts/demo.sh [BUILD_DIR]
set -o pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build=$top/$build ;; esac
IMG=$build/img
[ -x "$IMG" ] || {
	echo "demo: $IMG is not built (run make first)" >&2
	exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/img-demo.XXXXXX") || exit 1
trap 'cd / && rm -rf "$work"' EXIT
cd "$work" || exit 1

img() { "$IMG" "$@"; }

# Print a command the way a user would type it, then run it.
quote() {
	local a out=()
	for a in "$@"; do
		if [[ "$a" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
			out+=("$a")
		else
			out+=("'${a//\'/\'\\\'\'}'")
		fi
	done
	echo "${out[*]}"
}
run() {
	echo "+ $(quote "$@")"
	"$@" || {
		echo "demo: step failed (exit $?): $(quote "$@")" >&2
		exit 1
	}
}
step() { printf '\n# %s\n' "$*"; }

echo "img demo in $work"

step "a 64 MiB sample raw disk: a few data extents, a zero-filled one, holes elsewhere"
run img create -f raw sample.raw 64M
run img io -f raw -c 'write -P 0x11 0 1M' -c 'write -P 0x22 4M 256k' \
	-c 'write -P 0x33 10000000 12345' -c 'write -z 20M 1M' \
	-c 'write -P 0x44 63M 1M' sample.raw

step "a qcow2 base image from it"
run img convert -f raw -O qcow2 sample.raw base.qcow2

step "an overlay on the base, and new writes into the overlay only"
run img create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
run img io -f qcow2 -c 'write -P 0xab 512k 1M' -c 'write -z 4M 64k' \
	-c 'write -P 0xcd 33M 100k' overlay.qcow2
run img io -f qcow2 -c 'read -P 0x11 0 512k' -c 'read -P 0xab 512k 1M' \
	-c 'read -P 0 4M 64k' -c 'read -P 0x22 4160k 192k' overlay.qcow2

step "inspect the chain"
run img info --backing-chain overlay.qcow2
run img map overlay.qcow2
run img check overlay.qcow2

step "flatten the chain to raw, and back to a standalone qcow2"
run img convert -O raw overlay.qcow2 flat.raw
run img convert -f raw -O qcow2 flat.raw flat.qcow2
run img info flat.qcow2
run img check flat.qcow2

step "all three hold the same guest data; the base does not"
run img compare overlay.qcow2 flat.raw
run img compare overlay.qcow2 flat.qcow2
run img compare -f raw -F qcow2 flat.raw flat.qcow2
echo "+ ! $(quote img compare -q sample.raw flat.raw)"
if img compare -q sample.raw flat.raw; then
	echo "demo: the overlay's writes are missing from flat.raw" >&2
	exit 1
fi

if command -v qemu-img >/dev/null 2>&1; then
	step "cross-check with qemu-img"
	run qemu-img check overlay.qcow2
	run qemu-img check flat.qcow2
	run qemu-img compare overlay.qcow2 flat.qcow2
	run qemu-img compare -f raw -F qcow2 flat.raw overlay.qcow2
else
	step "qemu-img is not installed: skipping the cross-check"
fi

printf '\ndemo: ok\n'
