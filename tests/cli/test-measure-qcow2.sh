#!/bin/bash
# SPDX-License-Identifier: MIT
# img measure from a qcow2 source (with the "bitmaps" member qemu 7.2
# prints for qcow2 to qcow2: the space the source's persistent bitmaps take,
# none from a v2 source or into a v2 target): output identical to qemu-img
# measure.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' -c 'write 10M 3M' a.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
qemu-io -c 'write 20M 64k' b.qcow2 >/dev/null
qemu-img create -q -f qcow2 c.qcow2 3G
qemu-img bitmap --add c.qcow2 b0 || fail "bitmap b0"
qemu-img bitmap --add -g 512 c.qcow2 a-longer-bitmap-name || fail "bitmap b1"
qemu-img bitmap --add -g 2M --disable c.qcow2 b2 || fail "bitmap b2"
qemu-img create -q -f qcow2 -o compat=0.10 d.qcow2 64M
for f in a.qcow2 b.qcow2 c.qcow2 d.qcow2; do
	for o in human json; do
		for args in "-O qcow2" "-O raw" "-O qcow2 -o compat=0.10" "-O qcow2 -o cluster_size=2M"; do
			# shellcheck disable=SC2086
			"$IMG" measure --output=$o $args $f >img.out 2>&1 || { cat img.out; fail "measure $args $f"; }
			# shellcheck disable=SC2086
			qemu-img measure --output=$o $args $f >q.out 2>&1
			diff -u q.out img.out || fail "measure --output=$o $args $f differs"
		done
	done
done
exit 0
