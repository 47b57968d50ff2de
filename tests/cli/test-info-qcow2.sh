#!/bin/bash
# SPDX-License-Identifier: MIT
# img info on qcow2 images made by qemu-img, with a backing chain: human,
# JSON and --backing-chain output identical to qemu-img info.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 -o cluster_size=4k,lazy_refcounts=on top.qcow2 128M
qemu-img create -q -f qcow2 -o compat=0.10,refcount_bits=16 v2.qcow2 1G
mkdir sub
qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/rel.qcow2
for f in base.qcow2 mid.qcow2 top.qcow2 v2.qcow2 sub/rel.qcow2; do
	for o in human json; do
		for chain in "" --backing-chain; do
			"$IMG" info $chain --output=$o "$f" >img.out 2>&1 || { cat img.out; fail "info $chain $o $f"; }
			qemu-img info $chain --output=$o "$f" >q.out 2>&1
			diff -u q.out img.out || fail "info $chain --output=$o $f differs"
		done
	done
done
# without --backing-chain a missing backing file is not an error
qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 orphan.qcow2 1M
"$IMG" info orphan.qcow2 >img.out || fail "info with missing backing"
qemu-img info orphan.qcow2 >q.out
diff -u q.out img.out || fail "orphan info differs"
expect_exit 1 "$IMG" info --backing-chain orphan.qcow2
exit 0
