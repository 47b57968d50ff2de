#!/bin/bash
# SPDX-License-Identifier: MIT
# img dd: output files identical to qemu-img dd's for bs/count/skip
# combinations (including qemu's count-before-skip sizing); error exits.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw in.raw 3M
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' -c 'write -P 3 2100000 1' in.raw >/dev/null
while IFS="|" read -r ops; do
	rm -f o1 o2
	# shellcheck disable=SC2086
	"$IMG" dd -f raw if=in.raw of=o1 $ops >img.out 2>&1
	rc1=$?
	# shellcheck disable=SC2086
	qemu-img dd -f raw if=in.raw of=o2 $ops >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "dd $ops: exit $rc1, qemu-img $rc2"
	sed -i 's/^qemu-img: /img: /' q.out
	diff -u q.out img.out || fail "dd $ops messages differ"
	if [ -e o2 ]; then
		cmp o1 o2 || fail "dd $ops output differs"
	fi
done <<CASES

bs=64k count=2
bs=1M skip=1 count=2
bs=1M skip=1
bs=4k skip=100
skip=100000
count=0
bs=1x
bs=0
foo=1
bs=1000 count=3 skip=1
CASES
expect_exit 1 "$IMG" dd if=in.raw
grep -q '^img: Must specify both input and output files$' "$T/.err" || fail "missing of= message"
expect_exit 1 "$IMG" dd if=missing.raw of=x.raw
if "$IMG" --help | grep -q '^Supported formats:.* qcow2'; then
	expect_exit 0 "$IMG" dd -f raw -O qcow2 bs=1M if=in.raw of=o.qcow2
	qemu-img compare -f raw -F qcow2 in.raw o.qcow2 >/dev/null || fail "dd -O qcow2 content"
	qemu-img check o.qcow2 >/dev/null || fail "dd -O qcow2 check"
fi
exit 0
