#!/bin/bash
# SPDX-License-Identifier: MIT
# img io against qemu-io on qcow2 images (with a backing file): the same
# commands give the same output (timing masked) and exit codes, and the
# images written by img io read back identically in qemu-io and pass check.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 b.qcow2
norm() { sed -e 's/; [0-9:.]* sec.*/; TIME/' -e 's/^qemu-io: //' -e 's/^img: //' "$1" | sort; }
same_io() {
	local rc1 rc2
	"$IMG" io "$@" a.qcow2 >img.out 2>&1
	rc1=$?
	qemu-io "$@" b.qcow2 >q.out 2>&1
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "io $*: exit $rc1, qemu-io $rc2"
	diff -u <(norm q.out) <(norm img.out) || fail "io $* output differs"
}
same_io -c 'read -P 0x11 0 1M' -c 'read -P 0 1M 64k'
same_io -c 'write -P 0xab 64k 4k' -c 'read -P 0xab 64k 4k' -c 'read -P 0x11 0 64k'
same_io -c 'write -z 128k 64k' -c 'read -P 0 128k 64k' -c 'discard 256k 64k'
same_io -c 'write -P 3 2M 192k' -c flush
same_io -c map
same_io -c info
same_io -c 'read 16M 512' -c 'write 16M 1'
qemu-img check a.qcow2 >/dev/null || fail "qemu-img check after img io writes"
qemu-img compare a.qcow2 b.qcow2 >/dev/null || fail "img io and qemu-io results differ"
exit 0
