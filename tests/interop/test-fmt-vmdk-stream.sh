#!/bin/bash
# SPDX-License-Identifier: MIT
# VMDK streamOptimized against qemu-img, for sparse, random and zero-heavy
# contents (tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): made by img and by qemu-img, read identically
# through both, qemu-img check clean. Then: img's image has VMware's
# stream layout (version 3, GD at the end, footer and end-of-stream
# markers, ddb.toolsVersion) and refuses to rewrite it; convert compresses
# its grains in parallel at zlib's default level as qemu-img does (the file
# within 1% of qemu-img's size), also with -c, which other subformats
# refuse.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vmdk
fm_contents

V=(vmdk:subformat=streamOptimized)
for c in sparse random zero; do
	tcase fm_direct $c "${V[@]}"
done

stream_layout() {
	ctx="stream layout"
	must "$IMG" convert -f raw -O vmdk -o subformat=streamOptimized "$T/c-sparse.raw" "$T/s.vmdk"
	# Header: version 3, gdOffset -1 (GD at the end).
	[ "$(od -An -tu4 -j4 -N4 "$T/s.vmdk" | tr -d ' ')" = 3 ] || fail "[$ctx] version"
	[ "$(od -An -tx8 -j56 -N8 "$T/s.vmdk" | tr -d ' ')" = ffffffffffffffff ] || fail "[$ctx] gdOffset"
	# Footer marker (type 3), footer ("KDMV"), end-of-stream (type 0).
	size=$(stat -c %s "$T/s.vmdk")
	[ "$(od -An -tu4 -j$((size - 1536 + 12)) -N4 "$T/s.vmdk" | tr -d ' ')" = 3 ] || fail "[$ctx] footer marker"
	[ "$(dd if="$T/s.vmdk" bs=1 skip=$((size - 1024)) count=4 status=none)" = KDMV ] || fail "[$ctx] footer"
	cmp -n 512 -i $((size - 512)):0 "$T/s.vmdk" /dev/zero || fail "[$ctx] end-of-stream marker"
	grep -a -q 'ddb.toolsVersion' "$T/s.vmdk" || fail "[$ctx] no toolsVersion"
	expect_exit 1 "$IMG" io -f vmdk -c 'write -P 1 0 512' "$T/s.vmdk"
	cat "$T/.out" "$T/.err" | grep -q "not supported" || fail "[$ctx] rewrite: $(cat "$T/.out" "$T/.err")"
}

pipeline() {
	ctx="compression pipeline"
	local a b
	must "$IMG" convert -f raw -O vmdk -o subformat=streamOptimized "$T/c-mixed.raw" "$T/i.vmdk"
	must qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$T/c-mixed.raw" "$T/q.vmdk"
	a=$(stat -c %s "$T/i.vmdk")
	b=$(stat -c %s "$T/q.vmdk")
	[ $((a * 100)) -le $((b * 101)) ] || fail "[$ctx] img's file has $a bytes, qemu-img's $b"
	rm -f "$T/c.vmdk"
	must "$IMG" convert -c -f raw -O vmdk -o subformat=streamOptimized "$T/c-mixed.raw" "$T/c.vmdk"
	fm_qcompare vmdk "$T/c.vmdk" "$T/c-mixed.raw"
	qcheck "$T/c.vmdk" -f vmdk
	expect_exit 1 "$IMG" convert -c -f raw -O vmdk "$T/c-mixed.raw" "$T/m.vmdk"
	grep -q "streamOptimized" "$T/.err" || fail "[$ctx] -c monolithicSparse: $(cat "$T/.err")"
}

tcase stream_layout
tcase pipeline
finish
