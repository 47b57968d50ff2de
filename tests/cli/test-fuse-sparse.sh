#!/bin/bash
# SPDX-License-Identifier: MIT
# Sparseness through img-fuse: SEEK_DATA/SEEK_HOLE on MOUNTPOINT/disk report
# the image's allocation, so copies made with cp --sparse=always, with cp's
# default and with dd conv=sparse keep the holes (the copy allocates about
# what the image holds) and equal the image; punching a hole deallocates in
# the image (qemu-img map no longer lists it as data) and its file gives the
# space back (the freed clusters are punched); st_blocks follows the
# image's allocation.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/fuse-lib.sh"
fuse_requires
requires qemu-img qemu-io

M=1048576
img=$T/sp.qcow2
mnt=$T/m
mkdir "$mnt"
qemu-img create -q -f qcow2 "$img" 128M || fail "create"
qemu-io -c "write -P 0x11 0 1M" -c "write -P 0x22 50M 3M" \
	-c "write -P 0x33 127M 1M" "$img" >/dev/null || fail "qemu-io"
qemu-img convert -O raw "$img" "$T/want.raw" || fail "convert"
alloc() { echo $(($(stat -c %b "$1") * 512)); }

fuse_mount "$img" "$mnt"
blocks=$(alloc "$mnt/disk")
[ "$blocks" -lt $((8 * M)) ] || fail "st_blocks of the disk: $blocks"
for how in always auto dd; do
	rm -f "$T/copy"
	case $how in
	always) cp --sparse=always "$mnt/disk" "$T/copy" ;;
	auto) cp "$mnt/disk" "$T/copy" ;;
	dd) dd if="$mnt/disk" of="$T/copy" bs=64k conv=sparse status=none ;;
	esac || fail "copy ($how)"
	cmp "$T/copy" "$T/want.raw" || fail "copy ($how) differs"
	a=$(alloc "$T/copy")
	[ "$a" -le $((8 * M)) ] || fail "copy ($how) allocates $a bytes"
done
# punch a hole: it reads as zeroes, the image no longer maps data there and
# the image file gives the space back
before=$(stat -c %b "$img")
fallocate -p -o $((50 * M)) -l $((2 * M)) "$mnt/disk" || fail "punch"
cmp -n $((2 * M)) -i $((50 * M)):0 "$mnt/disk" /dev/zero || fail "hole not zero"
"$IMG" umount "$mnt" || fail "umount"
qemu-img check -q "$img" || fail "check"
qemu-img map --output=json "$img" | grep '"data": true' >"$T/map"
grep -q "\"start\": $((50 * M))," "$T/map" && fail "punched range still data"
grep -q "\"start\": $((52 * M))," "$T/map" || fail "data after the hole missing"
after=$(stat -c %b "$img")
[ $((before - after)) -ge 3072 ] || fail "punch: $before -> $after blocks of the image file"
exit 0
