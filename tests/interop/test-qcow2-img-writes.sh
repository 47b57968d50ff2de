#!/bin/bash
# SPDX-License-Identifier: MIT
# Direction img -> qemu: for each qcow2 geometry in the matrix (cluster sizes
# 512 B..2 MiB, refcount_bits 1..64, compat 0.10/1.1, extended_l2, lazy
# refcounts), img creates the image and writes patterns at unaligned offsets,
# zeroes and discards across cluster and L2 boundaries with `img io`; the
# same ops go through qemu-io into a raw reference. `qemu-img check` must find
# nothing wrong, `qemu-img compare` must find the image equal to the
# reference, and qemu-img must describe img's image exactly as it describes
# an image it created itself with the same options. `img convert` of the
# reference into the same geometry is checked the same way.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

# Fields of `qemu-img info --output=json` that depend on the file, not on
# what the header says.
info_of() {
	qemu-img info --output=json "$1" | grep -v -e '"filename"' -e '"actual-size"'
}

one() {
	local opts=$1 size=$2
	shift 2
	local cs extl2 l2 f=$T/img.qcow2 q=$T/qemu.qcow2 ref=$T/ref.raw c=$T/conv.qcow2
	cs=$(echo ",$opts," | sed -n 's/.*,cluster_size=\([^,]*\),.*/\1/p')
	cs=${cs:-65536}
	case $cs in *k) cs=$((${cs%k} * 1024)) ;; *M) cs=$((${cs%M} * 1048576)) ;; esac
	extl2=$(echo ",$opts," | sed -n 's/.*,extended_l2=\([^,]*\),.*/\1/p')
	l2=$(l2span "$cs" "${extl2:-off}")
	ctx="-o $opts size=$size"
	echo "== $ctx"
	rm -f "$f" "$q" "$c"

	must "$IMG" create -q -f qcow2 -o "$opts" "$f" "$size"
	qcheck "$f"
	must qemu-img create -q -f qcow2 -o "$opts" "$q" "$size"
	if ! diff <(info_of "$q") <(info_of "$f") >"$T/.diff"; then
		cat "$T/.diff" >&2
		fail "[$ctx] qemu-img info differs between qemu's image (<) and img's (>)"
	fi

	local ops
	mapfile -t ops < <(ops_basic "$cs" "$l2" "$size")
	ops+=("$@")
	ref_new "$ref" "$size"
	qemu_ops "$ref" raw "${ops[@]}"
	img_ops "$f" qcow2 "${ops[@]}"
	qcheck "$f"
	qcompare "$f" "$ref" -f qcow2 -F raw
	# img reads back what it wrote, after a fresh open.
	icompare "$f" "$ref" -f qcow2 -F raw

	must "$IMG" convert -f raw -O qcow2 -o "$opts" "$ref" "$c"
	qcheck "$c"
	qcompare "$c" "$ref" -f qcow2 -F raw
	[ "$(qemu-img info --output=json "$c" | grep -c '"virtual-size": '"$size"',')" = 1 ] ||
		fail "[$ctx] img convert made an image of the wrong size"
}

M=1048576
for cs in 512 4k 64k 2M; do
	tcase one "cluster_size=$cs" $((64 * M))
done
# 64 KiB clusters: one L2 table maps 512 MiB, so cross it on a 1 GiB image.
tcase one "cluster_size=64k" $((1024 * M)) "write -P 0x5b $((512 * M - 65536)) $((3 * 65536))"
for rb in 1 2 4 8 16 32 64; do
	tcase one "cluster_size=4k,refcount_bits=$rb" $((64 * M))
done
# Many clusters per refcount block entry width: the refcount table must grow
# (6 MiB of 512 B clusters at 64 bits is ~190 refcount blocks).
tcase one "cluster_size=512,refcount_bits=64" $((64 * M)) "write -P 0x5a $M $((6 * M))"
tcase one "cluster_size=512,refcount_bits=1" $((64 * M)) "write -P 0x5a $M $((6 * M))"
tcase one "compat=0.10,cluster_size=512" $((64 * M))
tcase one "compat=0.10" $((64 * M))
tcase one "compat=0.10,cluster_size=2M" $((64 * M))
for cs in 16k 64k 2M; do
	tcase one "extended_l2=on,cluster_size=$cs" $((64 * M))
done
tcase one "extended_l2=on,cluster_size=32k,refcount_bits=8" $((128 * M))
tcase one "lazy_refcounts=on" $((64 * M))
tcase one "lazy_refcounts=on,cluster_size=4k,refcount_bits=2" $((64 * M))
# A virtual size that is not a multiple of the cluster size.
tcase one "cluster_size=4k" $((64 * M + 4096 * 3 + 512))
finish
