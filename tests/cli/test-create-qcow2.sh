#!/bin/bash
# SPDX-License-Identifier: MIT
# img create -f qcow2: the "Formatting" line matches qemu-img's, the image
# passes qemu-img check and reads back in qemu-img info; backing files.
. "$(dirname "$0")/functions.sh"
requires qemu-img
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

while IFS="|" read -r opts size; do
	args="$opts $size"
	rm -f a.qcow2 b.qcow2
	# shellcheck disable=SC2086
	"$IMG" create -f qcow2 $opts a.qcow2 $size >img.out 2>&1 || { cat img.out; fail "create $args"; }
	# shellcheck disable=SC2086
	qemu-img create -f qcow2 $opts b.qcow2 $size >q.out 2>&1 || fail "qemu-img $args"
	sed -i 's/b\.qcow2/a.qcow2/' q.out
	diff -u q.out img.out || fail "Formatting line differs for: $args"
	qemu-img check -f qcow2 a.qcow2 >/dev/null || fail "qemu-img check after: $args"
	qemu-img info -f qcow2 --output=json a.qcow2 | grep -v actual-size >ia
	qemu-img info -f qcow2 --output=json b.qcow2 | grep -v actual-size | sed 's/b\.qcow2/a.qcow2/' >ib
	diff -u ib ia || fail "qemu-img info differs for: $args"
done <<CASES
|64M
-o cluster_size=4k|1G
-o lazy_refcounts=on,refcount_bits=8|1M
-o compat=0.10|10M
-o preallocation=metadata|1M
|1000
CASES

"$IMG" create -q -f qcow2 base.qcow2 32M || fail "base"
"$IMG" create -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 >img.out || fail "overlay"
grep -q "size=33554432 backing_file=base.qcow2 backing_fmt=qcow2" img.out || fail "overlay line: $(cat img.out)"
qemu-img info -f qcow2 top.qcow2 | grep -q '^backing file: base.qcow2$' || fail "backing not recorded"
expect_exit 1 "$IMG" create -f qcow2 -b base.qcow2 nofmt.qcow2
grep -q "Backing file specified without backing format" "$T/.err" || fail "-F required message"
expect_exit 1 "$IMG" create -f qcow2 -b missing.qcow2 -F qcow2 m.qcow2
grep -q "Could not open backing image" "$T/.err" || fail "missing backing message"
expect_exit 0 "$IMG" create -f qcow2 -u -b missing.qcow2 -F qcow2 m.qcow2 1M
expect_exit 1 "$IMG" create -f qcow2 -u -b missing.qcow2 -F qcow2 m2.qcow2
grep -q "Image creation needs a size parameter" "$T/.err" || fail "unsafe backing without size"
expect_exit 1 "$IMG" create -f qcow2 -o cluster_size=3k x.qcow2 1M
expect_exit 0 "$IMG" create -f qcow2 -o help
grep -q "^Supported qcow2 options:" "$T/.out" || fail "-o help"
exit 0
