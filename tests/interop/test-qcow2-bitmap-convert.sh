#!/bin/bash
# SPDX-License-Identifier: MIT
# Persistent dirty bitmaps through resize and convert, against QEMU 7.2: img
# resize (grow, then shrink) of an image whose bitmaps QEMU made keeps the
# marks inside the new size and leaves new space clean as QEMU reads it
# (qemu-nbd -B, nbdinfo --map), and qemu-img resize of img's bitmaps works;
# img convert --bitmaps copies QEMU's bitmaps (flags, granularity, contents)
# and qemu-img convert --bitmaps copies img's copy back; raw targets and
# sources are refused with qemu-img's messages.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2
requires qemu-nbd nbdinfo timeout
. "$(dirname "$0")/bitmap-lib.sh"

resize() {
	ctx="resize"
	local f=$T/r.qcow2
	must qemu-img create -q -f qcow2 "$f" 4M
	must qemu-img bitmap --add "$f" b0
	must qemu-img bitmap --add -g 1M "$f" big --disable
	must qemu-io -c 'write 1M 4k' -c 'write 4194303 1' "$f"
	must "$IMG" resize "$f" 6M
	must "$IMG" io -c 'write 5M 1' "$f"
	qcheck "$f"
	same_info "$f"
	want_dirty "$f" "b0=1048576 65536 4128768 65536 5242880 65536 " "big="
	must "$IMG" resize --shrink "$f" 2M
	qcheck "$f"
	want_dirty "$f" "b0=1048576 65536 "
	# QEMU resizes img's bitmaps too.
	must qemu-img resize "$f" 3M
	must "$IMG" io -c 'write 2M 1' "$f"
	qcheck "$f"
	want_dirty "$f" "b0=1048576 65536 2097152 65536 "
}

convert() {
	ctx="convert --bitmaps"
	local q=$T/cq.qcow2 i=$T/ci.qcow2 a=$T/ca.qcow2 b=$T/cb.qcow2 want
	must qemu-img create -q -f qcow2 -o cluster_size=16k "$q" 8M
	must qemu-img bitmap --add "$q" on
	must qemu-img bitmap --add -g 1M "$q" off --disable
	must qemu-io -c 'write 100k 8k' -c 'write 5M 1k' "$q"
	must qemu-img bitmap --enable "$q" off
	must qemu-io -c 'write 7M 1' "$q"
	want=("on=98304 16384 5242880 16384 7340032 16384 " "off=7340032 1048576 ")
	# img copies QEMU's bitmaps; qemu-img copies img's copy back.
	must "$IMG" convert --bitmaps -O qcow2 "$q" "$i"
	qcheck "$i"
	diff <(bitmaps_of qemu-img info "$q") <(bitmaps_of qemu-img info "$i") ||
		fail "[$ctx] bitmaps differ after img convert"
	want_dirty "$i" "${want[@]}"
	must qemu-img convert --bitmaps -O qcow2 "$i" "$a"
	want_dirty "$a" "${want[@]}"
	expect_exit 1 "$IMG" convert --bitmaps -O raw "$q" "$T/c.raw"
	grep -q "does not support bitmaps" "$T/.err" || fail "[$ctx] raw target: $(cat "$T/.err")"
	expect_exit 1 "$IMG" convert --bitmaps -O qcow2 "$T/c.raw" "$b"
	grep -q "Source lacks bitmap support" "$T/.err" || fail "[$ctx] raw source: $(cat "$T/.err")"
}

tcase resize
tcase convert
finish
