#!/bin/bash
# SPDX-License-Identifier: MIT
# Persistent dirty bitmaps against QEMU 7.2, both ways. img adds bitmaps and
# writes through them: qemu-img check is clean, qemu-img info lists the same
# bitmaps, and QEMU reads the dirty ranges img recorded (qemu-nbd -B BITMAP,
# nbdinfo --map=qemu:dirty-bitmap:BITMAP). qemu-img adds bitmaps and qemu-io
# writes: img info shows them as qemu-img does (human and JSON), img writes
# more and QEMU sees the union; img bitmap --clear/--disable/--enable/--merge
# (also from another file)/--remove on QEMU's image and qemu-img bitmap on
# img's. Resize and convert: test-qcow2-bitmap-convert.sh; in-use and stale
# bitmaps: test-qcow2-bitmap-inuse.sh.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2
requires qemu-nbd nbdinfo timeout

. "$(dirname "$0")/bitmap-lib.sh"

img_made() {
	ctx="img -> qemu"
	local f=$T/a.qcow2
	must "$IMG" create -q -f qcow2 "$f" 64M
	must "$IMG" bitmap --add "$f" b0
	must "$IMG" bitmap --add -g 128k "$f" b1 --disable
	must "$IMG" bitmap --add -g 512 "$f" fine
	qcheck "$f"
	same_info "$f"
	must "$IMG" io -c 'write 64k 64k' -c 'write 1M 4k' -c 'discard 8M 128k' \
		-c 'write -z 16M 1k' -c 'write 67107840 1k' "$f"
	qcheck "$f"
	same_info "$f"
	want_dirty "$f" "b0=65536 65536 1048576 65536 8388608 131072 16777216 65536 67043328 65536 " \
		"fine=65536 65536 1048576 4096 8388608 131072 16777216 1024 67107840 1024 " \
		"b1="
	# qemu-img changes img's bitmaps.
	must qemu-img bitmap --enable "$f" b1
	must qemu-img bitmap --merge b0 "$f" b1
	must qemu-img bitmap --remove "$f" fine
	must "$IMG" io -c 'write 32M 1' "$f"
	qcheck "$f"
	same_info "$f"
	want_dirty "$f" "b1=0 131072 1048576 131072 8388608 131072 16777216 131072 33554432 131072 66977792 131072 "
}

qemu_made() {
	ctx="qemu -> img"
	local f=$T/q.qcow2 o=$T/other.qcow2
	must qemu-img create -q -f qcow2 -o cluster_size=4k "$f" 32M
	must qemu-img bitmap --add "$f" b0
	must qemu-img bitmap --add -g 64k "$f" b1
	must qemu-img bitmap --add "$f" off --disable
	must qemu-io -c 'write 0 10k' -c 'write 20M 4k' "$f"
	same_info "$f"
	want_dirty "$f" "b0=0 12288 20971520 4096 "
	# img writes more; QEMU reads the union.
	must "$IMG" io -c 'write 30M 512' -c 'write -z 1M 64k' "$f"
	qcheck "$f"
	want_dirty "$f" "b0=0 12288 1048576 65536 20971520 4096 31457280 4096 " \
		"b1=0 65536 1048576 65536 20971520 65536 31457280 65536 " \
		"off="
	# img bitmap on QEMU's image.
	must "$IMG" bitmap --merge b0 "$f" off
	want_dirty "$f" "off=0 12288 1048576 65536 20971520 4096 31457280 4096 "
	must "$IMG" bitmap --clear "$f" b0 --disable
	must "$IMG" bitmap --enable "$f" off
	must "$IMG" io -c 'write 2M 1' "$f"
	want_dirty "$f" "b0=" \
		"off=0 12288 1048576 65536 2097152 4096 20971520 4096 31457280 4096 "
	# --merge from another file (-b/-F).
	must qemu-img create -q -f qcow2 "$o" 32M
	must qemu-img bitmap --add "$o" src
	must qemu-io -c 'write 16M 1' "$o"
	must "$IMG" bitmap --merge src -b "$o" -F qcow2 "$f" b0
	want_dirty "$f" "b0=16777216 65536 "
	must "$IMG" bitmap --remove "$f" b1
	qcheck "$f"
	same_info "$f"
	# Removing the last bitmap removes the extension; qemu-img agrees.
	must "$IMG" bitmap --remove "$f" b0
	must "$IMG" bitmap --remove "$f" off
	qcheck "$f"
	same_info "$f"
	qemu-img info "$f" | grep -q bitmaps && fail "[$ctx] bitmaps left"
	true
}

tcase img_made
tcase qemu_made
finish
