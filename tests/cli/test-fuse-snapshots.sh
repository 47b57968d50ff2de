#!/bin/bash
# SPDX-License-Identifier: MIT
# img-fuse snapshots/: each internal snapshot (made by qemu-img, QEMU's own
# tool) is a read-only file holding exactly what `qemu-img convert -l`
# extracts; writes to it are refused; snapshots made and deleted while the
# image is mounted (by qemu-img snapshot and by img snapshot) appear and
# disappear; the disk stays the active state and, on a read-write mount,
# writes to it do not change any snapshot.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/fuse-lib.sh"
fuse_requires
requires qemu-img qemu-io

img=$T/s.qcow2
mnt=$T/m
mkdir "$mnt"
qemu-img create -q -f qcow2 "$img" 8M || fail "create"
qemu-io -c "write -P 1 0 1M" -c "write -P 7 5M 64k" "$img" >/dev/null || fail "io 1"
qemu-img snapshot -c first "$img" || fail "snapshot first"
qemu-io -c "write -P 2 0 512k" -c "write -z 5M 64k" "$img" >/dev/null || fail "io 2"
qemu-img snapshot -c second "$img" || fail "snapshot second"
qemu-io -c "write -P 3 256k 64k" "$img" >/dev/null || fail "io 3"
for s in first second; do
	qemu-img convert -l "$s" -O raw "$img" "$T/$s.raw" || fail "convert -l $s"
done
qemu-img convert -O raw "$img" "$T/active.raw" || fail "convert"

fuse_mount -r "$img" "$mnt"
[ "$(ls "$mnt/snapshots" | tr '\n' ' ')" = "first second " ] ||
	fail "listing: $(ls "$mnt/snapshots")"
[ "$(stat -c %A "$mnt/snapshots/first")" = "-r--r--r--" ] || fail "mode"
for s in first second; do
	cmp "$mnt/snapshots/$s" "$T/$s.raw" || fail "snapshot $s contents"
done
cmp "$mnt/disk" "$T/active.raw" || fail "disk is not the active state"
echo x | dd of="$mnt/snapshots/first" conv=notrunc status=none 2>/dev/null &&
	fail "write to a snapshot"
[ -e "$mnt/snapshots/none" ] && fail "missing snapshot exists"

# made and deleted while mounted (read-only mount: qemu-img may write)
qemu-img snapshot -c third "$img" || fail "snapshot third"
[ "$(ls "$mnt/snapshots" | tr '\n' ' ')" = "first second third " ] ||
	fail "third does not appear: $(ls "$mnt/snapshots")"
cmp "$mnt/snapshots/third" "$T/active.raw" || fail "third contents"
qemu-img snapshot -d first "$img" || fail "delete first"
[ -e "$mnt/snapshots/first" ] && fail "deleted snapshot still there"
[ "$(ls "$mnt/snapshots" | tr '\n' ' ')" = "second third " ] ||
	fail "listing after delete: $(ls "$mnt/snapshots")"
# and through img snapshot
"$IMG" snapshot -c fourth "$img" || fail "img snapshot -c"
cmp "$mnt/snapshots/fourth" "$T/active.raw" || fail "fourth contents"
"$IMG" snapshot -d second "$img" || fail "img snapshot -d"
[ "$(ls "$mnt/snapshots" | tr '\n' ' ')" = "fourth third " ] ||
	fail "listing after img snapshot: $(ls "$mnt/snapshots")"
"$IMG" umount "$mnt" || fail "umount"

# read-write mount: writing the disk leaves the snapshots as they were
fuse_mount "$img" "$mnt"
dd if=/dev/urandom of="$mnt/disk" bs=64k count=20 conv=notrunc status=none ||
	fail "write disk"
cmp "$mnt/snapshots/third" "$T/active.raw" || fail "third changed by a write"
"$IMG" umount "$mnt" || fail "umount rw"
qemu-img check -q "$img" || fail "check"
qemu-img convert -l third -O raw "$img" "$T/third.raw" || fail "convert -l"
cmp "$T/active.raw" "$T/third.raw" || fail "snapshot changed in the image"

# a format without snapshots has an empty directory
"$IMG" create -q -f raw "$T/r.raw" 1M || fail "create raw"
fuse_mount -r "$T/r.raw" "$mnt"
[ -z "$(ls "$mnt/snapshots")" ] || fail "raw has snapshots"
"$IMG" umount "$mnt" || fail "umount raw"
exit 0
