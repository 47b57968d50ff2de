#!/bin/bash
# SPDX-License-Identifier: MIT
# img map on qcow2 images with a backing chain (data, zero clusters,
# unallocated ranges at several depths): output identical to qemu-img map.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' -c 'write -P 3 4M 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c 'write -P 2 1M 64k' -c 'write -z 4M 64k' -c 'write -P 5 8M 128k' mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 7 2M 64k' -c 'discard 8M 64k' top.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k small.qcow2 1M
qemu-io -c 'write 0 4k' -c 'write 8k 8k' -c 'write -z 16k 4k' small.qcow2 >/dev/null
for f in base.qcow2 mid.qcow2 top.qcow2 small.qcow2; do
	for o in human json; do
		for range in "" "--start-offset=1M --max-length=4M"; do
			# shellcheck disable=SC2086
			"$IMG" map --output=$o $range $f >img.out 2>&1 || { cat img.out; fail "map $o $f"; }
			# shellcheck disable=SC2086
			qemu-img map --output=$o $range $f >q.out 2>&1
			diff -u q.out img.out || fail "map --output=$o $range $f differs"
		done
	done
done
exit 0
