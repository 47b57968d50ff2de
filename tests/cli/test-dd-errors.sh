#!/bin/bash
# SPDX-License-Identifier: MIT
# img dd reads ahead, but a read or a write failing mid-way ends it as the
# block-by-block copy did: exit 1, one message, and an output holding
# exactly the blocks before the failing one (zeroes after).
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io jq
cd "$T" || exit 1
M=1048576

# prefix_of OUT IN BS: OUT holds whole BS-blocks of IN, then zeroes.
prefix_of() {
	local at
	at=$(cmp "$1" "$2" | sed -n 's/.* byte \([0-9]*\),.*/\1/p')
	[ -n "$at" ] || fail "$1: the copy did not stop"
	[ $(((at - 1) % $3)) = 0 ] || fail "$1: stops inside a block (byte $at)"
	cmp -s <(tail -c +"$at" "$1") <(head -c $(($(stat -c %s "$1") - at + 1)) /dev/zero) ||
		fail "$1: data after the failing block"
	echo $((at - 1))
}

# Input data for 4 MiB and 12 MiB past the end of its file: 4 MiB fails.
qemu-img create -q -f qcow2 t.qcow2 16M
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 8M 64k' \
	-c 'write -P 3 12M 64k' -c 'write -P 4 4M 64k' t.qcow2 >/dev/null
qemu-img convert -O raw t.qcow2 t.raw
[ "$(qemu-img map --output=json t.qcow2 | jq -c '[.[] | select(.data) | .offset]')" = \
	"[327680,524288,393216,458752]" ] || skip "qemu-img laid out the clusters differently"
truncate -s $((0x70000)) t.qcow2
for bs in 512 4k 1M 3M; do
	rm -f o.raw
	expect_exit 1 "$IMG" dd if=t.qcow2 of=o.raw bs=$bs
	grep -qx "img: error while reading from input image file: qcow2: guest offset 0x400000 .*past the end.*" "$T/.err" ||
		{ cat "$T/.err"; fail "bs=$bs: read error message"; }
	[ "$(wc -l <"$T/.err")" = 1 ] || fail "bs=$bs: more than one message"
	[ "$(stat -c %s o.raw)" = $((16 * M)) ] || fail "bs=$bs: output size"
	# 3M blocks: the one holding 4 MiB starts at 3 MiB
	want=$((4 * M))
	[ $bs = 3M ] && want=$((3 * M))
	cmp -s <(head -c $want o.raw) <(head -c $want t.raw) || fail "bs=$bs: blocks before"
	cmp -s <(tail -c +$((want + 1)) o.raw) <(head -c $((16 * M - want)) /dev/zero) ||
		fail "bs=$bs: data past the failing block"
done

# A write failing mid-way (file size limit) into an allocating format.
head -c 8M /dev/urandom | tr '\0' '\1' >r.raw
for bs in 4096 65536; do
	rm -f w.qcow2
	(trap '' XFSZ; ulimit -f 2100; exec "$IMG" dd -O qcow2 bs=$bs if=r.raw of=w.qcow2) \
		>/dev/null 2>"$T/.err"
	[ $? = 1 ] || fail "bs=$bs: dd past the file size limit did not fail"
	grep -qx 'img: error while writing to output image file: .*File too large' "$T/.err" ||
		{ cat "$T/.err"; fail "bs=$bs: write error message"; }
	qemu-img convert -O raw w.qcow2 w.raw
	n=$(prefix_of w.raw r.raw $bs)
	[ "$n" -gt $M ] || fail "bs=$bs: only $n bytes copied"
done
exit 0
