#!/bin/bash
# SPDX-License-Identifier: MIT
# img resize on qcow2: grow keeps data and passes qemu-img check; shrink
# needs --shrink; the result matches qemu-img info's virtual size.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0xab 1M 64k' a.qcow2 >/dev/null
expect_exit 0 "$IMG" resize a.qcow2 +1G
grep -q '^Image resized.$' "$T/.out" || fail "success message"
qemu-img info --output=json a.qcow2 | grep -q '"virtual-size": 1140850688' || fail "size after grow"
qemu-img check a.qcow2 >/dev/null || fail "check after grow"
qemu-io -c 'read -P 0xab 1M 64k' a.qcow2 >/dev/null || fail "data after grow"
expect_exit 1 "$IMG" resize a.qcow2 32M
expect_exit 0 "$IMG" resize --shrink a.qcow2 32M
qemu-img info --output=json a.qcow2 | grep -q '"virtual-size": 33554432' || fail "size after shrink"
qemu-img check a.qcow2 >/dev/null || fail "check after shrink"
qemu-io -c 'read -P 0xab 1M 64k' a.qcow2 >/dev/null || fail "data after shrink"
exit 0
