#!/bin/bash
# SPDX-License-Identifier: MIT
# img-fuse as a user runs it: the tree (disk, info.json, snapshots/), disk
# size and contents, info.json byte-identical to `img info --output=json
# --backing-chain`, the command returning only once the mount works, the pid
# file, -r (writes refused, "ro" mount), allow_other only when asked,
# truncate refused without --growable and resizing with it (also by writing
# past the end), statfs, --file mode, reads of a corrupt image failing with
# EUCLEAN while the mount stays up, `img mount` / `img umount` (which
# returns only after the image is closed), SIGTERM flushing and closing, and
# errors (missing image, bad mount point) exiting 1 with nothing mounted.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/fuse-lib.sh"
fuse_requires
requires qemu-img

M=1048576
img=$T/a.qcow2
mnt=$T/m
mkdir "$mnt"
"$IMG" create -q -f qcow2 "$img" 64M || fail "create"
"$IMG" io -c "write -P 0xab 1M 1M" -c "write -P 0xcd 63M 1M" "$img" >/dev/null ||
	fail "io write"

# ---- the tree, sizes, contents; ready as soon as the command returns ----
fuse_mount --pid-file="$T/pid" "$img" "$mnt"
[ "$(ls "$mnt" | tr '\n' ' ')" = "disk info.json snapshots " ] ||
	fail "tree: $(ls "$mnt")"
[ "$(stat -c %s "$mnt/disk")" = $((64 * M)) ] || fail "disk size"
[ "$(stat -c %A "$mnt/disk")" = "-rw-r--r--" ] || fail "disk mode"
[ "$(stat -c %A "$mnt/info.json")" = "-r--r--r--" ] || fail "info.json mode"
pid=$(cat "$T/pid") || fail "no pid file"
alive "$pid" || fail "pid file does not name a live process"
qemu-img convert -U -O raw "$img" "$T/want.raw" || fail "convert"
cmp "$mnt/disk" "$T/want.raw" || fail "disk contents differ from the image"
grep " $mnt fuse.img " /proc/self/mounts | grep -q allow_other &&
	fail "allow_other without --allow-other"

# info.json is what img info prints for the image's absolute path
"$IMG" info --output=json --backing-chain -U "$(realpath "$img")" >"$T/info.want" ||
	fail "img info"
cmp "$mnt/info.json" "$T/info.want" || fail "info.json differs from img info"
[ "$(stat -c %s "$mnt/info.json")" = "$(stat -c %s "$T/info.want")" ] ||
	fail "info.json size"

# writes land in the image; flush on close
printf 'hello fuse' | dd of="$mnt/disk" bs=1 seek=$((5 * M + 3)) conv=notrunc \
	status=none || fail "write"
[ "$(dd if="$mnt/disk" bs=1 skip=$((5 * M + 3)) count=10 status=none)" = \
	"hello fuse" ] || fail "read back"
# not growable: truncate and writes past the end are refused
truncate -s 128M "$mnt/disk" 2>/dev/null && fail "truncate without --growable"
dd if=/dev/zero of="$mnt/disk" bs=4k seek=$((16 * 1024)) count=1 \
	conv=notrunc status=none 2>/dev/null && fail "write past the end"
# O_TRUNC is ignored (a block device's behaviour): contents stay
: >"$mnt/disk" || fail "open O_TRUNC"
[ "$(stat -c %s "$mnt/disk")" = $((64 * M)) ] || fail "O_TRUNC changed the size"
# statfs: 4 KiB blocks, as many as the disk has
read -r bs blocks <<<"$(stat -f -c '%S %b' "$mnt")"
[ "$bs" = 4096 ] && [ "$blocks" = $((64 * M / 4096)) ] ||
	fail "statfs: bsize $bs blocks $blocks"

# img umount returns after the daemon closed the image
"$IMG" umount "$mnt" || fail "img umount"
alive "$pid" && fail "daemon still running after img umount"
[ -e "$T/pid" ] && fail "pid file left behind"
is_mounted "$mnt" && fail "still mounted"
qemu-img check -q "$img" || fail "check after umount"
qemu-img convert -U -O raw "$img" "$T/want.raw" || fail "convert"
[ "$(dd if="$T/want.raw" bs=1 skip=$((5 * M + 3)) count=10 status=none)" = \
	"hello fuse" ] || fail "write not in the image"

# ---- -r ----
fuse_mount -r --allow-other "$img" "$mnt"
grep " $mnt fuse.img " /proc/self/mounts | grep -q '[ ,]ro[ ,]' || fail "-r not ro"
grep " $mnt fuse.img " /proc/self/mounts | grep -q allow_other ||
	fail "--allow-other not passed"
[ "$(stat -c %A "$mnt/disk")" = "-r--r--r--" ] || fail "-r disk mode"
echo x | dd of="$mnt/disk" conv=notrunc status=none 2>/dev/null &&
	fail "write on a -r mount"
cmp "$mnt/disk" "$T/want.raw" ||
	fail "-r contents"
"$IMG" umount "$mnt" || fail "umount -r"

# ---- --growable: truncate and writes past the end resize ----
"$IMG" create -q -f qcow2 "$T/g.qcow2" 1M || fail "create g"
fuse_mount --growable "$T/g.qcow2" "$mnt"
truncate -s 3M "$mnt/disk" || fail "truncate with --growable"
[ "$(stat -c %s "$mnt/disk")" = $((3 * M)) ] || fail "size after truncate"
dd if=/dev/urandom of="$T/tail" bs=4096 count=2 status=none
dd if="$T/tail" of="$mnt/disk" bs=4096 seek=$((4 * 256)) conv=notrunc \
	status=none || fail "append"
[ "$(stat -c %s "$mnt/disk")" = $((4 * M + 8192)) ] ||
	fail "size after a write past the end: $(stat -c %s "$mnt/disk")"
"$IMG" umount "$mnt" || fail "umount g"
[ "$(qemu-img info --output=json "$T/g.qcow2" | grep '"virtual-size"')" = \
	"    \"virtual-size\": $((4 * M + 8192))," ] || fail "image size"
qemu-img convert -O raw "$T/g.qcow2" "$T/g.raw" || fail "convert g"
cmp -i $((4 * M)):0 "$T/g.raw" "$T/tail" || fail "appended data"
qemu-img check -q "$T/g.qcow2" || fail "check g"

# ---- --file: the mount point is a regular file that becomes the disk ----
: >"$T/f"
fuse_mount --file "$img" "$T/f"
[ "$(stat -c %s "$T/f")" = $((64 * M)) ] || fail "--file size"
cmp "$T/f" "$T/want.raw" ||
	fail "--file contents"
dd if=/dev/urandom of="$T/blk" bs=64k count=3 status=none
dd if="$T/blk" of="$T/f" bs=64k seek=100 conv=notrunc status=none || fail "--file write"

# ---- SIGTERM flushes and closes ----
pid=$(pgrep -n -f "img-fuse --file $img") || fail "no daemon for --file"
kill -TERM "$pid"
for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
alive "$pid" && fail "daemon ignores SIGTERM"
is_mounted "$T/f" && fail "still mounted after SIGTERM"
qemu-img check -q "$img" || fail "check after SIGTERM"
qemu-img convert -O raw "$img" "$T/after.raw" || fail "convert after SIGTERM"
cmp -i $((100 * 65536)):0 -n $((3 * 65536)) "$T/after.raw" "$T/blk" ||
	fail "write before SIGTERM lost"

# ---- img mount / img umount, foreground ----
"$IMG" mount -r "$img" "$mnt" || fail "img mount"
cmp "$mnt/disk" "$T/after.raw" || fail "img mount contents"
"$IMG" umount "$mnt" || fail "img umount"
"$IMG_FUSE" -f -r "$img" "$mnt" &
fpid=$!
for _ in $(seq 100); do is_mounted "$mnt" && break; sleep 0.1; done
is_mounted "$mnt" || fail "-f did not mount"
"$IMG" umount "$mnt" || fail "umount -f"
wait "$fpid" || fail "foreground img-fuse exited non-zero"

# ---- a backing chain: the disk reads through it, info.json lists it ----
"$IMG" create -q -f qcow2 -b "$img" -F qcow2 "$T/top.qcow2" || fail "create top"
fuse_mount -r "$T/top.qcow2" "$mnt"
cmp "$mnt/disk" "$T/after.raw" || fail "chain contents"
"$IMG" info --output=json --backing-chain -U "$T/top.qcow2" >"$T/info.chain" ||
	fail "img info chain"
cmp "$mnt/info.json" "$T/info.chain" || fail "chain info.json differs from img info"
grep -c '"filename"' "$mnt/info.json" | grep -qx 2 || fail "info.json: not 2 layers"
"$IMG" umount "$mnt" || fail "umount chain"

# ---- a corrupt L1 entry: reads there fail (EUCLEAN), the mount stays up ----
qemu-img create -q -f qcow2 "$T/c.qcow2" 8M || fail "create c"
qemu-img convert -O raw "$T/c.qcow2" "$T/c.raw" || fail "convert c"
qemu-io -c "write -P 1 0 64k" -c "write -P 2 4M 64k" "$T/c.qcow2" >/dev/null ||
	fail "qemu-io c"
l1=$((16#$(od -An -tx1 -j40 -N8 "$T/c.qcow2" | tr -d ' ')))
# the L2 table of the first 512 MiB at an offset that is not cluster-aligned
printf '\x80\x00\x00\x00\x7f\x00\x02\x00' |
	dd of="$T/c.qcow2" bs=1 seek=$l1 conv=notrunc status=none
fuse_mount -r "$T/c.qcow2" "$mnt"
dd if="$mnt/disk" of=/dev/null bs=64k count=1 2>"$T/dd.err" &&
	fail "read through a corrupt L1 entry succeeded"
grep -q "Structure needs cleaning" "$T/dd.err" || fail "read error: $(cat "$T/dd.err")"
[ "$(stat -c %s "$mnt/disk")" = $((8 * M)) ] || fail "mount gone after a bad read"
"$IMG" umount "$mnt" || fail "umount c"

# ---- errors ----
expect_exit 1 "$IMG_FUSE" "$T/missing.qcow2" "$mnt"
grep -q '^img-fuse: ' "$T/.err" || fail "error message shape"
expect_exit 1 "$IMG_FUSE" "$img" "$T/f"
expect_exit 1 "$IMG_FUSE" --file "$img" "$mnt"
expect_exit 1 "$IMG_FUSE" --growable -r "$img" "$mnt"
expect_exit 1 "$IMG_FUSE" "$img"
is_mounted "$mnt" && fail "mounted after an error"
expect_exit 1 "$IMG" umount "$mnt"
exit 0
