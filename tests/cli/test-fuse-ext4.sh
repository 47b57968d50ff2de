#!/bin/bash
# SPDX-License-Identifier: MIT
# A file system on an img-fuse disk: mkfs.ext4 on MOUNTPOINT/disk of a qcow2
# and e2fsck -fn clean; then, where loop devices work, the way a container
# runtime uses a raw image as a loop-mounted root file system: losetup on
# the FUSE file, mount the ext4, write files, unmount, and after remounting
# the image read them back; e2fsck and qemu-img check clean at the end.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/fuse-lib.sh"
fuse_requires
requires qemu-img mkfs.ext4 e2fsck

img=$T/fs.qcow2
mnt=$T/m
mkdir "$mnt" "$T/fs"
"$IMG" create -q -f qcow2 "$img" 256M || fail "create"
fuse_mount "$img" "$mnt"
mkfs.ext4 -q -F "$mnt/disk" || fail "mkfs.ext4"
e2fsck -fn "$mnt/disk" >"$T/fsck" 2>&1 || { cat "$T/fsck"; fail "e2fsck after mkfs"; }

loop_ok=true
dev=$(losetup -f --show "$mnt/disk" 2>"$T/loop.err") || loop_ok=false
if $loop_ok; then
	at_exit "losetup -d $dev"
	if mount "$dev" "$T/fs" 2>"$T/mount.err"; then
		at_exit "umount $T/fs"
		mkdir -p "$T/fs/etc" "$T/fs/data"
		echo "root:x:0:0::/root:/bin/sh" >"$T/fs/etc/passwd"
		dd if=/dev/urandom of="$T/fs/data/blob" bs=1M count=20 status=none
		md5=$(md5sum <"$T/fs/data/blob")
		for i in $(seq 200); do echo "file $i" >"$T/fs/data/f$i"; done
		umount "$T/fs" || fail "umount ext4"
	else
		loop_ok=false
		echo "mount of the loop device failed: $(cat "$T/mount.err")"
	fi
	losetup -d "$dev" || fail "losetup -d"
else
	echo "no loop device: $(cat "$T/loop.err")"
fi
"$IMG" umount "$mnt" || fail "umount fuse"
qemu-img check -q "$img" || fail "qemu-img check"

fuse_mount -r "$img" "$mnt"
e2fsck -fn "$mnt/disk" >"$T/fsck" 2>&1 || { cat "$T/fsck"; fail "e2fsck after use"; }
if $loop_ok; then
	dev=$(losetup -r -f --show "$mnt/disk") || fail "losetup again"
	at_exit "losetup -d $dev"
	mount -o ro,noload "$dev" "$T/fs" || fail "mount again"
	[ "$(cat "$T/fs/etc/passwd")" = "root:x:0:0::/root:/bin/sh" ] ||
		fail "passwd lost"
	[ "$(md5sum <"$T/fs/data/blob")" = "$md5" ] || fail "blob differs"
	[ "$(cat "$T/fs/data/f200")" = "file 200" ] || fail "f200 lost"
	umount "$T/fs" || fail "umount ext4 (2)"
	losetup -d "$dev"
fi
"$IMG" umount "$mnt" || fail "umount fuse (2)"
$loop_ok || skip "mkfs/e2fsck passed; loop devices unavailable, so no loop mount"
exit 0
