#!/bin/bash
# SPDX-License-Identifier: MIT
# img measure from a qcow2 source (with the "bitmaps" member qemu 7.2
# prints for qcow2 to qcow2): output identical to qemu-img measure.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' -c 'write 10M 3M' a.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
qemu-io -c 'write 20M 64k' b.qcow2 >/dev/null
for f in a.qcow2 b.qcow2; do
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
