#!/bin/bash
# SPDX-License-Identifier: MIT
# img-fuse mounting an RBD image (raw guest data) from a throwaway cluster:
# the disk file reads what qemu-io wrote through QEMU's rbd driver, and a
# write through the mount lands in the RBD image once unmounted.
. "$(dirname "$0")/rbd-lib.sh"
. "$top/tests/cli/fuse-lib.sh"
fuse_requires
rbd_cluster
M=1048576

must "$IMG" create -f raw rbd:$POOL/disk 8M
must qemu-io -f raw -c "write -P 0x66 1M 1M" rbd:$POOL/disk
mnt=$T/m
mkdir "$mnt"
fuse_mount --format=raw --pid-file="$T/pid" rbd:$POOL/disk "$mnt"

ctx="reads through the mount"
[ "$(stat -c %s "$mnt/disk")" = $((8 * M)) ] || fail "[$ctx] disk size"
truncate -s 8M "$T/ref.raw"
qemu-io -f raw -c "write -P 0x66 1M 1M" "$T/ref.raw" >/dev/null
cmp "$mnt/disk" "$T/ref.raw" || fail "[$ctx] contents differ"

ctx="a write through the mount"
printf 'hello' | dd of="$mnt/disk" bs=1 seek=4096 conv=notrunc status=none ||
	fail "[$ctx] dd"
pid=$(cat "$T/pid")
fusermount3 -u "$mnt" || fail "[$ctx] unmount"
for _ in $(seq 200); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && fail "[$ctx] img-fuse still running after unmount"
must qemu-io -f raw -c "read -v 4096 5" rbd:$POOL/disk
grep -q "68 65 6c 6c 6f" "$T/.must" || fail "[$ctx] $(cat "$T/.must")"
echo ok
