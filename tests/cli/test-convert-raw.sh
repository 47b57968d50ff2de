#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert round trips raw -> qcow2 -> raw and raw -> raw on a sparse
# image with holes, zero-filled data blocks and random data: the results
# must compare equal (qemu-img compare and cmp), raw output must stay sparse
# and qcow2 output must pass qemu-img check.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

# 24 MiB: random at 1M (3M), zeroes written as data at 5M (1M), random 4k
# blocks at 9M, a 4k zero block inside random data at 13M, random tail.
truncate -s 24M src.raw
dd if=/dev/urandom of=src.raw bs=1M seek=1 count=3 conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=1M seek=5 count=1 conv=notrunc status=none
dd if=/dev/urandom of=src.raw bs=4k seek=2304 count=3 conv=notrunc status=none
dd if=/dev/urandom of=src.raw bs=4k seek=3328 count=8 conv=notrunc status=none
dd if=/dev/zero of=src.raw bs=4k seek=3330 count=1 conv=notrunc status=none
dd if=/dev/urandom of=src.raw bs=64k seek=383 count=1 conv=notrunc status=none

expect_exit 0 "$IMG" convert -f raw -O raw src.raw out.raw
cmp src.raw out.raw || fail "raw -> raw differs"
# holes and the zero data stay unallocated: well under 4 MiB of data
alloc=$(du -k out.raw | cut -f1)
[ "$alloc" -le 3300 ] || fail "raw -> raw not sparse: $alloc KiB allocated"

expect_exit 0 "$IMG" convert -O qcow2 src.raw out.qcow2
qemu-img check -q out.qcow2 || fail "qemu-img check of out.qcow2"
qemu-img compare -q -f raw -F qcow2 src.raw out.qcow2 ||
	fail "raw -> qcow2 differs"
# the zero MiB at 5M is not allocated in the qcow2 target
qemu-img map --output=json out.qcow2 | awk -v s=5242880 -v e=6291456 '
	/"present": true/ {
		match($0, /"start": [0-9]+/); st = substr($0, RSTART + 9, RLENGTH - 9) + 0
		match($0, /"length": [0-9]+/); ln = substr($0, RSTART + 10, RLENGTH - 10) + 0
		if (st + ln > s && st < e) bad = 1
	}
	END { exit bad }' || fail "zero range allocated in qcow2 target"

expect_exit 0 "$IMG" convert -f qcow2 -O raw out.qcow2 back.raw
cmp src.raw back.raw || fail "qcow2 -> raw differs"
qemu-img compare -q out.qcow2 back.raw || fail "qemu-img compare back.raw"

# probed source format, progress and quiet accepted
expect_exit 0 "$IMG" convert -p -O qcow2 back.raw p.qcow2
grep -q '100.00/100%' "$T/.out" || fail "-p printed no final progress"
expect_exit 0 "$IMG" convert -q -p -O raw p.qcow2 q.raw
[ ! -s "$T/.out" ] || fail "-q printed something"
cmp src.raw q.raw || fail "-q copy differs"
exit 0
