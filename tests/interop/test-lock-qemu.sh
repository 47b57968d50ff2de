#!/bin/bash
# SPDX-License-Identifier: MIT
# Image locking against QEMU's: a writer (qemu-nbd, img-nbd) keeps every
# other opener out, readers keep writers out, -U (force share) reads past a
# writer, and `img create` over an image in use fails without truncating it.
# img-fuse: a read-write mount locks as a writer; a read-only mount shares.
# Checked both ways: qemu-img against img's locks, img against qemu-nbd's.
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-nbd md5sum

qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
must qemu-io -f qcow2 -c 'write -P 0x11 0 1M' "$T/a.qcow2"
sum=$(md5sum <"$T/a.qcow2")

lock_msg() { # what the last expect_exit printed must be a lock error
	grep -q 'lock' "$T/.err" || fail "[$ctx] not a lock error: $(cat "$T/.err")"
}

qnbd_start() {
	qemu-nbd --fork --pid-file "$T/q.pid" -k "$T/q.sock" -f qcow2 "$@" \
		"$T/a.qcow2" || fail "qemu-nbd did not start"
	at_exit "kill \$(cat '$T/q.pid' 2>/dev/null) 2>/dev/null"
}
qnbd_stop() {
	local pid
	pid=$(cat "$T/q.pid")
	kill "$pid"
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	fail "qemu-nbd did not stop"
}

ctx="qemu-nbd read-write"
qnbd_start
expect_exit 1 "$IMG" info "$T/a.qcow2"
lock_msg
expect_exit 0 "$IMG" info -U "$T/a.qcow2"
expect_exit 1 "$IMG" snapshot -c s1 "$T/a.qcow2"
lock_msg
expect_exit 1 "$IMG" io -c 'write 0 64k' "$T/a.qcow2"
expect_exit 1 "$IMG" create -f qcow2 "$T/a.qcow2" 1G
lock_msg
qnbd_stop
[ "$(md5sum <"$T/a.qcow2")" = "$sum" ] || fail "[$ctx] the image changed"

ctx="qemu-nbd read-only"
qnbd_start -r
expect_exit 0 "$IMG" info "$T/a.qcow2"
expect_exit 0 "$IMG" compare "$T/a.qcow2" "$T/a.qcow2"
expect_exit 1 "$IMG" snapshot -c s1 "$T/a.qcow2"
lock_msg
qnbd_stop

ctx="img-nbd read-write"
nbd_start w -k "$T/i.sock" -f qcow2 "$T/a.qcow2"
expect_exit 1 qemu-img info "$T/a.qcow2"
lock_msg
expect_exit 0 qemu-img info -U "$T/a.qcow2"
expect_exit 1 qemu-img snapshot -c s1 "$T/a.qcow2"
expect_exit 1 "$IMG" info "$T/a.qcow2"
expect_exit 1 "$IMG" commit "$T/a.qcow2"
nbd_stop w

ctx="img-nbd read-only"
nbd_start r -r -k "$T/i.sock" -f qcow2 "$T/a.qcow2"
expect_exit 0 qemu-img info "$T/a.qcow2"
expect_exit 1 qemu-img snapshot -c s1 "$T/a.qcow2"
lock_msg
nbd_stop r

ctx="img-fuse"
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
	mkdir "$T/m"
	timeout 30 "$BUILD/img-fuse" "$T/a.qcow2" "$T/m" || fail "[$ctx] mount"
	at_exit "fusermount3 -u '$T/m' 2>/dev/null"
	expect_exit 1 qemu-img info "$T/a.qcow2"
	lock_msg
	"$IMG" umount "$T/m" || fail "[$ctx] umount"
	# a read-only mount shares the image: it follows snapshots made
	timeout 30 "$BUILD/img-fuse" -r "$T/a.qcow2" "$T/m" || fail "[$ctx] mount -r"
	expect_exit 0 qemu-img snapshot -c ro "$T/a.qcow2"
	[ -e "$T/m/snapshots/ro" ] || fail "[$ctx] snapshot made by qemu-img not seen"
	"$IMG" umount "$T/m" || fail "[$ctx] umount -r"
	expect_exit 0 qemu-img snapshot -d ro "$T/a.qcow2"
else
	echo "img-fuse part not run: no /dev/fuse or fusermount3"
fi

ctx="unlocked again"
expect_exit 0 "$IMG" snapshot -c s1 "$T/a.qcow2"
expect_exit 0 qemu-img check "$T/a.qcow2"
echo ok
