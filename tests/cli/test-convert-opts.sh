#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert -n (into an existing target holding old data), --target-is-zero,
# -S 0 (fully allocated output), -S 64k and -t/-T cache modes: contents must
# match the source and allocation must follow qemu-img's rules.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

truncate -s 8M src.raw
dd if=/dev/urandom of=src.raw bs=1M seek=2 count=1 conv=notrunc status=none

# -n over garbage: holes of the source must become zeroes in the target
head -c 10M /dev/urandom >dst.raw
expect_exit 0 "$IMG" convert -n src.raw dst.raw
[ "$(stat -c %s dst.raw)" = 10485760 ] || fail "-n changed the target size"
cmp -n 8388608 src.raw dst.raw || fail "-n over old data differs"

# --target-is-zero trusts the caller: old data in holes stays
head -c 8M /dev/urandom >tz.raw
expect_exit 0 "$IMG" convert -n --target-is-zero src.raw tz.raw
cmp -n 1048576 -i 2097152 src.raw tz.raw || fail "--target-is-zero data differs"
cmp -s -n 1048576 src.raw tz.raw && fail "--target-is-zero wrote zeroes"

# -n into a qcow2 target (-O names its format)
if "$IMG" --help | grep -q '^Supported formats:.* qcow2'; then
	qemu-img create -q -f qcow2 dst.qcow2 8M
	qemu-io -f qcow2 -c 'write -P 7 0 8M' dst.qcow2 >/dev/null 2>&1 ||
		qemu-img convert -n -O qcow2 <(head -c 8M /dev/urandom) dst.qcow2
	expect_exit 0 "$IMG" convert -n -O qcow2 src.raw dst.qcow2
	qemu-img compare -q -f raw -F qcow2 src.raw dst.qcow2 ||
		fail "-n -O qcow2 differs"
	qemu-img check -q dst.qcow2 || fail "qemu-img check dst.qcow2"
fi

# -S 0: every byte allocated
expect_exit 0 "$IMG" convert -S 0 src.raw full.raw
cmp src.raw full.raw || fail "-S 0 differs"
[ "$(du -k full.raw | cut -f1)" -ge 8192 ] || fail "-S 0 left holes"
# default: sparse
expect_exit 0 "$IMG" convert src.raw sparse.raw
[ "$(du -k sparse.raw | cut -f1)" -le 1100 ] || fail "default output not sparse"

# a 4 KiB zero block inside data: skipped with the default -S 4k, written
# with -S 64k (the run is shorter than 64k)
dd if=/dev/zero of=src.raw bs=4k seek=600 count=1 conv=notrunc status=none
expect_exit 0 "$IMG" convert -S 4k src.raw s4.raw
expect_exit 0 "$IMG" convert -S 64k src.raw s64.raw
cmp src.raw s4.raw && cmp src.raw s64.raw || fail "-S copies differ"
a4=$(du -k s4.raw | cut -f1)
a64=$(du -k s64.raw | cut -f1)
[ "$a4" -lt "$a64" ] || fail "-S 4k ($a4 KiB) not sparser than -S 64k ($a64 KiB)"

# cache modes
for t in none writeback writethrough directsync unsafe; do
	expect_exit 0 "$IMG" convert -t $t -T $t src.raw c-$t.raw
	cmp src.raw c-$t.raw || fail "-t $t differs"
done
exit 0
