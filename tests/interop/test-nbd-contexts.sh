#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd's metadata and snapshot exports against qemu-nbd on the same
# images: nbdinfo --map of base:allocation, qemu:allocation-depth (-A) and
# qemu:dirty-bitmap:NAME (-B, a persistent bitmap qemu-io's writes marked)
# must print the same extents from both servers; -l SNAP serves an internal
# snapshot (read-only) as qemu-nbd -l does; --snapshot-exports adds
# NAME@SNAP exports.
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-nbd nbdinfo

qemu-img create -q -f qcow2 "$T/base.qcow2" 32M
qemu-io -c "write -P 1 0 2M" -c "write -P 2 8M 1M" "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/a.qcow2"
qemu-io -c "write -P 3 1M 2M" -c "write -z 8M 64k" "$T/a.qcow2" >/dev/null
qemu-img snapshot -c snap1 "$T/a.qcow2"
qemu-img bitmap --add "$T/a.qcow2" b0
qemu-io -c "write -P 4 4M 128k" -c "write -P 5 20M 64k" -c "write -P 6 31M 1M" \
	"$T/a.qcow2" >/dev/null

# maps SERVER-KIND ARGS...: nbdinfo maps of the export "" into $T/KIND.*
maps() {
	local kind=$1 sock=$T/$1.sock
	shift
	rm -f "$sock"
	if [ "$kind" = qemu ]; then
		qemu-nbd -t -k "$sock" "$@" &
		echo $! >"$T/qemu.pid"
		at_exit "kill \$(cat '$T/qemu.pid') 2>/dev/null"
		for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
	else
		nbd_start img -t -k "$sock" "$@"
	fi
	local u="nbd+unix:///?socket=$sock"
	nbdinfo --map "$u" >"$T/$kind.base" || fail "[$kind] map base"
	nbdinfo --map=qemu:allocation-depth "$u" >"$T/$kind.depth" || fail "[$kind] map depth"
	nbdinfo --map=qemu:dirty-bitmap:b0 "$u" >"$T/$kind.bitmap" || fail "[$kind] map bitmap"
	if [ "$kind" = qemu ]; then
		kill "$(cat "$T/qemu.pid")"
		wait "$(cat "$T/qemu.pid")" 2>/dev/null
	else
		nbd_stop img
	fi
}

ctx="maps match qemu-nbd"
maps qemu -r -A -B b0 -f qcow2 "$T/a.qcow2"
maps img -r -A -B b0 -f qcow2 "$T/a.qcow2"
for m in base depth bitmap; do
	diff "$T/qemu.$m" "$T/img.$m" >&2 || fail "[$ctx] $m map differs (qemu-nbd first)"
done
grep -q dirty "$T/img.bitmap" || fail "[$ctx] no dirty extent in $(cat "$T/img.bitmap")"

ctx="-B with a missing bitmap fails at start"
expect_exit 1 "$IMG_NBD" -k "$T/x.sock" -r -B nope -f qcow2 "$T/a.qcow2"

ctx="-l serves the snapshot, as qemu-nbd -l"
nbd_start l -t -k "$T/l.sock" -l snap1 -f qcow2 "$T/a.qcow2"
must qemu-io -r -f raw -c "read -P 1 0 1M" -c "read -P 3 1M 2M" \
	-c "read -P 0 4M 128k" -c "read -P 0 8M 64k" -c "read -P 2 8256k 64k" \
	"nbd+unix:///?socket=$T/l.sock"
must qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/l.sock" "$T/img-snap.raw"
nbdinfo --json "nbd+unix:///?socket=$T/l.sock" | grep -q '"is_read_only": true' ||
	fail "[$ctx] not read-only"
nbd_stop l
qemu-img convert -f qcow2 -O raw -l snapshot.name=snap1 "$T/a.qcow2" "$T/q-snap.raw"
cmp "$T/img-snap.raw" "$T/q-snap.raw" || fail "[$ctx] snapshot contents differ from qemu-img's"

ctx="--snapshot-exports"
nbd_start s -t -k "$T/s.sock" -x disk --snapshot-exports -f qcow2 "$T/a.qcow2"
nbdinfo --list "nbd+unix:///?socket=$T/s.sock" >"$T/list" || fail "[$ctx] list"
grep -q 'export="disk@snap1"' "$T/list" || fail "[$ctx] no disk@snap1 in $(cat "$T/list")"
must qemu-img convert -f raw -O raw "nbd+unix:///disk@snap1?socket=$T/s.sock" "$T/s.raw"
cmp "$T/s.raw" "$T/q-snap.raw" || fail "[$ctx] snapshot export differs"
qemu-io -f raw -c "write -P 9 0 4k" "nbd+unix:///disk@snap1?socket=$T/s.sock" >"$T/o" 2>&1 &&
	fail "[$ctx] wrote to a snapshot export"
must qemu-io -f raw -c "write -P 9 0 4k" -c "read -P 9 0 4k" "nbd+unix:///disk?socket=$T/s.sock"
nbd_stop s
qcheck "$T/a.qcow2"
echo ok
