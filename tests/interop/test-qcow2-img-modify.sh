#!/bin/bash
# SPDX-License-Identifier: MIT
# Images that qemu made and filled, modified in place by img: writes, zeroes,
# discards, resize (grow, with L1 growth on small clusters, and --shrink
# through data). After every step `qemu-img check` must be clean and
# `qemu-img compare` must match a raw reference that got the same changes.
# Also: an image with an internal snapshot (img's writes must copy shared
# clusters and leave the snapshot intact), and a lazy-refcounts image that
# qemu left dirty (img must repair it when it opens it for writing).
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576
f=$T/q.qcow2
ref=$T/ref.raw

# setup OPTS SIZE CS: a qemu-made image with data, and its raw export.
setup() {
	local opts=$1 size=$2 cs=$3
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o "$opts" "$f" "$size"
	qemu_ops "$f" qcow2 "write -P 0xa1 0 $((40 * cs + 99))" \
		"write -P 0xa2 $((size / 2 - cs / 2)) $((3 * cs))" \
		"write -z $((3 * cs)) $((2 * cs))" "write -P 0xa3 $((size - 2 * cs)) $((2 * cs))"
	qemu_export "$f" "$ref"
}

# step OP...: apply with img to the image, with qemu-io to the reference.
step() {
	img_ops "$f" qcow2 "$@"
	qemu_ops "$ref" raw "$@"
	qcheck "$f"
	qcompare "$f" "$ref" -F raw
}

resize() {
	local new=$1
	shift
	must "$IMG" resize -q "$@" "$f" "$new"
	must qemu-img resize -q -f raw "$@" "$ref" "$new"
	qcheck "$f"
	qcompare "$f" "$ref" -F raw
	qemu-img info --output=json "$f" | grep -q "\"virtual-size\": $new," ||
		fail "[$ctx] virtual size is not $new after img resize"
}

one() {
	local opts=$1 size=$2 cs=$3
	ctx="-o $opts size=$size"
	echo "== $ctx"
	setup "$opts" "$size" "$cs"
	local ops
	mapfile -t ops < <(ops_basic "$cs" "$(l2span "$cs")" "$size")
	step "${ops[@]}"
	# Overwrite allocated data in place, zero and discard it.
	step "write -P 0xb1 $((cs / 3)) $((5 * cs))" "write -z $((6 * cs)) $((4 * cs))" \
		"write -z -u $((12 * cs)) $((2 * cs))" "discard $((32 * cs)) $((4 * cs))" \
		"write -P 0xb2 $((33 * cs + 1)) 2"
	ctx="$ctx, grow"
	resize $((size * 4 + 3 * 512))
	step "write -P 0xb3 $((size * 4 - cs)) $((cs + 3 * 512))" \
		"write -P 0xb4 $((size * 2 + 5)) $((cs + 10))"
	ctx="$ctx, shrink"
	resize $((size * 2 + cs * 2)) --shrink
	resize $((size / 2 + 3 * 512)) --shrink
	step "write -P 0xb5 $((size / 2 - cs)) $((cs + 3 * 512))"
}

tcase one "cluster_size=64k" $((16 * M)) 65536
tcase one "cluster_size=512" $((4 * M)) 512
tcase one "cluster_size=4k,refcount_bits=1" $((16 * M)) 4096
tcase one "cluster_size=4k,refcount_bits=64" $((16 * M)) 4096
tcase one "compat=0.10,cluster_size=4k" $((16 * M)) 4096
tcase one "extended_l2=on,cluster_size=32k" $((16 * M)) 32768
tcase one "lazy_refcounts=on,cluster_size=2M" $((128 * M)) $((2 * M))

snapshot_case() {
	ctx="internal snapshot"
	echo "== $ctx"
	setup "cluster_size=4k" $((16 * M)) 4096
	cp "$ref" "$T/snap.raw"
	must qemu-img snapshot -c s1 "$f"
	step "write -P 0xc1 $((4096 + 7)) 10000" "write -z 0 4096" "discard $((20 * 4096)) 8192" \
		"write -P 0xc2 $((8 * M - 100)) 200"
	rm -f "$T/s1.raw"
	must qemu-img convert -l snapshot.name=s1 -O raw "$f" "$T/s1.raw"
	cmp "$T/s1.raw" "$T/snap.raw" || fail "[$ctx] img's writes changed the snapshot's contents"
}

dirty_case() {
	ctx="lazy refcounts, left dirty by qemu"
	echo "== $ctx"
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k "$f" $((16 * M))
	# (an inner shell waits for the aborting qemu-io, so its report goes nowhere)
	bash -c 'ulimit -c 0; qemu-io -c "$1" -c "$2" -c abort "$3"; true' sh \
		"write -P 0xd1 0 $M" "write -P 0xd2 $((5 * M + 3)) 5000" "$f" >/dev/null 2>&1
	qemu-img check "$f" >/dev/null 2>&1 && fail "[$ctx] qemu-io abort did not leave the image dirty"
	ref_new "$ref" $((16 * M))
	qemu_ops "$ref" raw "write -P 0xd1 0 $M" "write -P 0xd2 $((5 * M + 3)) 5000"
	step "write -P 0xd3 $((2 * M)) 4096"
}

tcase snapshot_case
tcase dirty_case
finish
