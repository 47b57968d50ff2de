#!/bin/bash
# SPDX-License-Identifier: MIT
# img io against qemu-io on raw images: the same commands give the same
# output (timing figures masked), exit codes and image contents; pattern
# mismatches, past-the-end requests and bad arguments fail with exit 1.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 1M
cp a.raw b.raw
norm() { sed -e 's/; [0-9:.]* sec.*/; TIME/' -e 's/^qemu-io: //' -e 's/^img: //' "$1" | sort; }
same_io() {
	local rc1 rc2
	"$IMG" io -f raw "$@" a.raw >img.out 2>&1
	rc1=$?
	qemu-io -f raw "$@" b.raw >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "io $*: exit $rc1, qemu-io $rc2"
	# stdout and stderr interleave differently; compare the line sets
	diff -u <(norm q.out) <(norm img.out) || fail "io $* output differs"
	cmp a.raw b.raw || fail "io $*: image contents differ"
}
same_io -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k'
same_io -c 'read -P 0xab 0 8k'
same_io -c 'read -P 0xab 1 511' -c 'write -P 0x1 0 100' -c 'read -P 0xab 0 100'
same_io -c 'read -v 0 40' -c 'read -v 4090 20'
same_io -c 'write -z 8k 4k' -c 'read -P 0 8k 4k' -c 'write -z -u 64k 64k' -c flush
same_io -c 'discard 128k 64k' -c 'write 200k 1k' -c 'read -P 0xcd 200k 1k'
same_io -c 'write -P 5 1020k 4k'
same_io -c 'read 1M 1' -c 'read 1048575 2'
same_io -c 'read 0 1x'
same_io -c 'read 0'
same_io -c 'write -u 0 4k'
same_io -c 'write -z -P 1 0 4k'
same_io -c 'read -P 300 0 1'
same_io -c 'nosuchcommand'
same_io -c 'read -q 0 512' -c 'write -q 0 512'
same_io -c 'read -P 0xcd -s 512 -l 512 0 4k' -c 'read -P 0 -s 100 -l 10 0 4k'
same_io -c map -c info
same_io -r -c 'read 0 512'
expect_exit 1 "$IMG" io -f raw -r -c 'write 0 512' a.raw
expect_exit 1 "$IMG" io -c 'read 0 512' missing.raw
expect_exit 1 "$IMG" io -f raw -c 'read 2M 512' a.raw
grep -q '^read failed: Input/output error$' "$T/.out" || fail "past-the-end read message"
expect_exit 0 "$IMG" io -f raw -q -c 'write 0 512' a.raw
[ -s "$T/.out" ] && fail "-q printed output"
printf 'write -P 7 0 512\nread -P 7 0 512\n' | "$IMG" io -f raw a.raw >img.out || fail "commands from stdin"
grep -c '^wrote 512/512\|^read 512/512' img.out | grep -q 2 || fail "stdin commands output"
exit 0
