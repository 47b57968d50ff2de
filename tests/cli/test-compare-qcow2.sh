#!/bin/bash
# SPDX-License-Identifier: MIT
# img compare across qcow2 (with backing chains) and raw: same verdicts,
# messages and exit codes as qemu-img compare.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-img convert -f qcow2 -O raw base.qcow2 flat.raw
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 diff.qcow2
qemu-io -c 'write -P 2 1M 512' diff.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 zero.qcow2
qemu-io -c 'write -z 0 64k' zero.qcow2 >/dev/null
qemu-img create -q -f qcow2 big.qcow2 128M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' big.qcow2 >/dev/null

same() {
	local rc1 rc2
	"$IMG" compare "$@" >img.out 2>&1
	rc1=$?
	qemu-img compare "$@" >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "compare $*: exit $rc1, qemu-img $rc2"
	diff -u q.out img.out || fail "compare $* output differs"
}
same base.qcow2 top.qcow2
same -f qcow2 -F raw top.qcow2 flat.raw
same top.qcow2 diff.qcow2
same diff.qcow2 base.qcow2
same zero.qcow2 base.qcow2
same base.qcow2 big.qcow2
same -s base.qcow2 big.qcow2
same -q top.qcow2 diff.qcow2
exit 0
