#!/bin/bash
# SPDX-License-Identifier: MIT
# img compare reads several chunks ahead but reports what qemu-img compare's
# chunk-by-chunk loop does: the FIRST differing offset when many chunks
# differ (in the common part and in the tail of the larger image); with
# unreadable chunks, the first of them (exit 2) even when a later one fails
# too, and a difference before them (exit 1) rather than the error.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

poke() { # poke FILE OFFSET: change one byte
	printf '\377' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
same() { # same ARGS...: img compare prints and exits as qemu-img compare
	"$IMG" compare "$@" >img.out 2>&1
	rc1=$?
	qemu-img compare "$@" >q.out 2>&1
	rc2=$?
	sed -i 's/^qemu-img: /img: /' q.out
	[ "$rc1" = "$rc2" ] || fail "compare $*: exit $rc1, qemu-img $rc2"
	diff -u q.out img.out || fail "compare $*: output differs"
}

head -c 24M /dev/urandom | tr '\0' '\1' >a.raw
cp a.raw b.raw
M=1048576
for off in $((3 * M + 1536 + 7)) $((9 * M)) $((15 * M + 512)) $((23 * M + 100)); do
	poke b.raw "$off"
done
same a.raw b.raw
grep -qx "Content mismatch at offset $((3 * M + 1536))!" img.out || fail "not the first difference"
same -f raw -F raw b.raw a.raw
qemu-img convert -O qcow2 b.raw b.qcow2
same a.raw b.qcow2
same -q a.raw b.qcow2

# The larger image's tail must read as zeroes: the first non-zero sector.
cp a.raw big.raw
truncate -s 40M big.raw
poke big.raw $((29 * M + 4096 + 3))
poke big.raw $((37 * M))
same a.raw big.raw
same big.raw a.raw
grep -qx "Content mismatch at offset $((29 * M + 4096))!" img.out || fail "not the first tail difference"

# A qcow2 whose data for 4 MiB and 12 MiB lies past the end of its file.
qemu-img create -q -f qcow2 t.qcow2 16M
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 8M 64k' \
	-c 'write -P 3 12M 64k' -c 'write -P 4 4M 64k' t.qcow2 >/dev/null
qemu-img convert -O raw t.qcow2 t.raw
[ "$(qemu-img map --output=json t.qcow2 | jq -c '[.[] | select(.data) | .offset]')" = \
	"[327680,524288,393216,458752]" ] || skip "qemu-img laid out the clusters differently"
truncate -s $((0x70000)) t.qcow2
expect_exit 2 "$IMG" compare t.raw t.qcow2
grep -q "^img: Error while reading offset $((4 * M)) of t.qcow2: .*past the end" "$T/.err" ||
	{ cat "$T/.err"; fail "not the first unreadable chunk"; }
[ "$(wc -l <"$T/.err")" = 1 ] || fail "more than one message"
poke t.raw $((1 * M + 700))
expect_exit 1 "$IMG" compare t.raw t.qcow2
grep -qx "Content mismatch at offset $((1 * M + 512))!" "$T/.out" ||
	{ cat "$T/.out" "$T/.err"; fail "an unreadable later chunk hid the difference"; }
[ -s "$T/.err" ] && fail "an error printed after the difference"
exit 0
