#!/bin/bash
# SPDX-License-Identifier: MIT
# Quick qcow2 smoke test in both directions. img creates and writes ->
# `qemu-img check` is clean and qemu-io reads the patterns back; qemu-img
# creates and qemu-io writes -> `img io` reads the patterns back. Also: img's
# create of a default image is byte-identical to qemu-img's.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

a=$T/a.qcow2
b=$T/b.qcow2

for opts in "" "compat=0.10" "cluster_size=4k,refcount_bits=1" \
	"extended_l2=on,cluster_size=32k" "lazy_refcounts=on"; do
	ctx="img -> qemu ${opts:-defaults}"
	echo "== $ctx"
	rm -f "$a"
	must "$IMG" create -q -f qcow2 ${opts:+-o "$opts"} "$a" 64M
	must "$IMG" io -f qcow2 -c "write -P 0x11 1000 70000" \
		-c "write -P 0x22 33554000 2000000" -c "write -z 200000 65536" \
		-c "write -P 0x33 67100000 8864" "$a"
	qcheck "$a"
	must qemu-io -f qcow2 -c "read -P 0x11 1000 70000" \
		-c "read -P 0 0 1000" -c "read -P 0x22 33554000 2000000" \
		-c "read -P 0 200000 65536" -c "read -P 0x33 67100000 8864" "$a"
	grep -q "Pattern verification failed" "$T/.must" &&
		fail "[$ctx] qemu-io pattern mismatch"

	ctx="qemu -> img ${opts:-defaults}"
	echo "== $ctx"
	rm -f "$b"
	must qemu-img create -q -f qcow2 ${opts:+-o "$opts"} "$b" 64M
	must qemu-io -f qcow2 -c "write -P 0x44 5000 100000" \
		-c "write -P 0x55 33554000 2000000" -c "write -z 300000 65536" "$b"
	must "$IMG" io -f qcow2 -c "read -P 0x44 5000 100000" \
		-c "read -P 0 0 5000" -c "read -P 0x55 33554000 2000000" \
		-c "read -P 0 300000 65536" "$b"
	grep -qi "verification failed\|mismatch" "$T/.must" &&
		fail "[$ctx] img io pattern mismatch"
done

ctx="create layout"
rm -f "$a" "$b"
must "$IMG" create -q -f qcow2 "$a" 1G
must qemu-img create -q -f qcow2 "$b" 1G
cmp -s "$a" "$b" || fail "[$ctx] img create differs from qemu-img create"
exit 0
