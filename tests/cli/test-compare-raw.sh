#!/bin/bash
# SPDX-License-Identifier: MIT
# img compare on raw images: messages and exit codes identical to qemu-img
# compare (identical, mismatch at 512-byte granularity, size mismatch with
# zero or non-zero tail, strict mode, -q, errors with exit 2).
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 1M
qemu-img create -q -f raw b.raw 1M
qemu-img create -q -f raw c.raw 1M
qemu-io -f raw -c 'write -P 1 700 1' c.raw >/dev/null
qemu-img create -q -f raw big0.raw 3M
qemu-img create -q -f raw big1.raw 3M
qemu-io -f raw -c 'write -P 7 2100000 1' big1.raw >/dev/null
qemu-img create -q -f raw d.raw 1M
qemu-io -f raw -c 'write -P 9 0 1M' d.raw >/dev/null
cp d.raw e.raw
qemu-io -f raw -c 'write -P 8 1000000 1' e.raw >/dev/null

same() {
	local rc1 rc2
	"$IMG" compare "$@" >img.out 2>&1
	rc1=$?
	qemu-img compare "$@" >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "compare $*: exit $rc1, qemu-img $rc2"
	diff -u q.out img.out || fail "compare $* output differs"
}
F="-f raw -F raw"
same $F a.raw b.raw
same $F a.raw c.raw
same $F c.raw a.raw
same $F a.raw big0.raw
same $F big1.raw a.raw
same $F a.raw big1.raw
same $F -s a.raw big0.raw
same $F -s a.raw b.raw
same $F -q a.raw c.raw
same $F -q a.raw b.raw
same $F d.raw e.raw
same $F d.raw d.raw
same $F -p a.raw b.raw
expect_exit 0 "$IMG" compare $F a.raw b.raw
expect_exit 1 "$IMG" compare $F a.raw c.raw
expect_exit 2 "$IMG" compare $F a.raw missing.raw
expect_exit 2 "$IMG" compare -f nosuchfmt a.raw b.raw
expect_exit 1 "$IMG" compare a.raw
expect_exit 1 "$IMG" compare -Z a.raw b.raw
exit 0
