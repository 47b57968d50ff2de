#!/bin/bash
# SPDX-License-Identifier: MIT
# Bitmaps QEMU left in use, and stale bitmap extensions, against QEMU 7.2:
# a bitmap in use after qemu-io dies with it loaded (qemu-io abort) is shown
# in use by img info as by qemu-img, refused by img bitmap for everything but
# --remove, left alone by img's writes; a stale extension (autoclear bit 0
# cleared, as a program without bitmap support leaves it) is ignored by both
# tools, its clusters counting as leaks for both checks.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2
requires dd

. "$(dirname "$0")/bitmap-lib.sh"

in_use() {
	ctx="in use"
	local f=$T/u.qcow2
	must qemu-img create -q -f qcow2 "$f" 16M
	must qemu-img bitmap --add "$f" b0
	must qemu-img bitmap --add "$f" b1 --disable
	# qemu-io dies with the bitmap loaded: in_use stays set.
	qemu-io -c 'write 0 4k' -c abort "$f" >/dev/null 2>&1
	if ! qemu-img info "$f" | grep -q in-use; then
		echo "qemu-io abort did not leave the bitmap in use: case skipped"
		return 0
	fi
	same_info "$f"
	"$IMG" info "$f" | grep -q 'in-use' || fail "[$ctx] not shown in use"
	expect_exit 1 "$IMG" bitmap --clear "$f" b0
	grep -q inconsistent "$T/.err" || fail "[$ctx] no 'inconsistent' in: $(cat "$T/.err")"
	expect_exit 1 "$IMG" bitmap --disable "$f" b0
	expect_exit 1 "$IMG" bitmap --merge b0 "$f" b1
	expect_exit 1 "$IMG" bitmap --add "$f" b0
	# Writes work and leave it alone; img itself leaves no in_use behind.
	must "$IMG" io -c 'write 1M 4k' "$f"
	qcheck "$f"
	same_info "$f"
	# QEMU set in_use on the disabled bitmap too.
	must "$IMG" bitmap --remove "$f" b0
	qcheck "$f"
	same_info "$f"
	must "$IMG" bitmap --remove "$f" b1
	qcheck "$f"
	same_info "$f"
}

stale() {
	ctx="stale extension"
	local f=$T/s.qcow2
	must qemu-img create -q -f qcow2 "$f" 16M
	must qemu-img bitmap --add "$f" b0
	# Clear autoclear bit 0 (header byte 95), as an old program would.
	printf '\0' | dd of="$f" bs=1 seek=95 conv=notrunc status=none
	"$IMG" info "$f" | grep -q bitmaps && fail "[$ctx] img lists a stale bitmap"
	same_info "$f"
	# Both report the stranded clusters as leaks.
	expect_exit 3 qemu-img check "$f"
	expect_exit 3 "$IMG" check "$f"
	must "$IMG" bitmap --add "$f" new
	must "$IMG" check -r leaks "$f"
	qcheck "$f"
	same_info "$f"
}

tcase in_use
tcase stale
finish
