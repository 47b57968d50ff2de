#!/bin/bash
# SPDX-License-Identifier: MIT
# kill -9 of img-fuse in the middle of writes: afterwards the image passes
# `img check` and qemu-img check (at worst leaked clusters) and holds every
# write that was fsynced before the kill. The writer does numbered 64 KiB
# writes at scattered offsets, each followed by fsync, and logs each one
# only after its fsync returned.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/fuse-lib.sh"
fuse_requires
requires qemu-img

img=$T/k.qcow2
mnt=$T/m
mkdir "$mnt"
"$IMG" create -q -f qcow2 -o cluster_size=4096 "$img" 256M || fail "create"
fuse_mount --pid-file="$T/pid" "$img" "$mnt"
pid=$(cat "$T/pid")

: >"$T/done"
# write i: 64 KiB of the byte (i % 250 + 1) at block (i * 977 % 4000), 64 KiB
# blocks; 977 is prime to 4000, so no block is written twice
(
	for i in $(seq 0 3999); do
		head -c 65536 /dev/zero | tr '\0' "\\$(printf %03o $((i % 250 + 1)))" >"$T/p$i"
		dd if="$T/p$i" of="$mnt/disk" bs=64k seek=$((i * 977 % 4000)) \
			conv=notrunc,fsync status=none 2>/dev/null || exit 0
		echo "$i" >>"$T/done"
	done
) &
writer=$!
for _ in $(seq 300); do
	mapfile -t done_list <"$T/done"
	[ ${#done_list[@]} -ge 15 ] && break
	sleep 0.05
done
kill -9 "$pid"
wait "$writer"
fusermount3 -u -z "$mnt"
mapfile -t done_list <"$T/done"
n=${#done_list[@]}
[ "$n" -ge 15 ] || fail "only $n writes before the kill"
echo "$n fsynced writes before kill -9"

# exit 0: clean; 3: leaked clusters only (qemu-img's codes)
"$IMG" check "$img" >"$T/check" 2>&1
rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || { cat "$T/check"; fail "img check exit $rc"; }
qemu-img check "$img" >"$T/qcheck" 2>&1
rc=$?
[ $rc = 0 ] || [ $rc = 3 ] || { cat "$T/qcheck"; fail "qemu-img check exit $rc"; }

# every logged write is in the image
qemu-img convert -O raw "$img" "$T/out.raw" || fail "convert"
for i in "${done_list[@]}"; do
	blk=$((i * 977 % 4000))
	cmp -s -n 65536 -i $((blk * 65536)):0 "$T/out.raw" "$T/p$i" ||
		fail "fsynced write $i (block $blk) lost"
done
exit 0
