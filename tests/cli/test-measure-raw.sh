#!/bin/bash
# SPDX-License-Identifier: MIT
# img measure with raw output (and qcow2 output for --size when built):
# text and JSON identical to qemu-img measure; error exits.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 3M
qemu-io -f raw -c 'write 1M 64k' a.raw >/dev/null
same() {
	local rc1 rc2
	"$IMG" measure "$@" >img.out 2>&1
	rc1=$?
	qemu-img measure "$@" >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "measure $*: exit $rc1, qemu-img $rc2"
	sed -i 's/^qemu-img: /img: /' q.out
	diff -u q.out img.out || fail "measure $* output differs"
}
for o in human json; do
	same --output=$o --size 1G
	same --output=$o -O raw --size 10M
	same --output=$o -f raw a.raw
	same --output=$o -O raw -f raw a.raw
done
same
same --size 1G a.raw
same --size 1x
same -O raw -o bogus=1 --size 1M
expect_exit 1 "$IMG" measure -f raw missing.raw
expect_exit 0 "$IMG" measure -O raw -o help
grep -q "^Supported raw options:" "$T/.out" || fail "-o help"
if "$IMG" --help | grep -q '^Supported formats:.* qcow2'; then
	for o in human json; do
		same --output=$o -O qcow2 --size 1G
		same --output=$o -O qcow2 -o cluster_size=4k --size 1G
		same --output=$o -O qcow2 -f raw a.raw
	done
fi
exit 0
