#!/bin/bash
# SPDX-License-Identifier: MIT
# qcow2 preallocation off/metadata/falloc/full, on create and on resize, across
# geometries: img's image must pass `qemu-img check`, read as zeroes, use no
# more host space than qemu's own image with the same options (within a
# tolerance; falloc/full must allocate the whole size), show the same
# allocation map as qemu's (flags only: host offsets may differ), and take
# writes afterwards (checked and compared by qemu-img against a raw
# reference); the grown part after a resize must read as zeroes too.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576
# The allocation map reduced to (start, length, present, data) runs: host
# offsets and the "zero" flag depend on where the clusters landed in the
# host file (holes are found per file system block), not on the format.
shape() {
	qemu-img map --output=json "$@" | awk -F'[:,]' '
	{
		for (i = 1; i < NF; i++) {
			if ($i ~ /"start"/) s = $(i + 1) + 0
			if ($i ~ /"length"/) l = $(i + 1) + 0
			if ($i ~ /"present"/) p = $(i + 1)
			if ($i ~ /"data"/) d = $(i + 1)
		}
		k = p "/" d
		if (n && k == key && s == start + len) { len += l; next }
		if (n) print start, len, key
		start = s; len = l; key = k; n = 1
	}
	END { if (n) print start, len, key }'
}
alloc() { echo $(($(stat -c %b "$1") * 512)); }

one() {
	local opts=$1 size=$2 grow=$3 cs=$4
	local f=$T/img.qcow2 q=$T/qemu.qcow2 p
	p=$(echo ",$opts," | sed -n 's/.*,preallocation=\([^,]*\),.*/\1/p')
	ctx="-o $opts size=$size"
	echo "== $ctx"
	rm -f "$f" "$q"
	must "$IMG" create -q -f qcow2 -o "$opts" "$f" "$size"
	must qemu-img create -q -f qcow2 -o "$opts" "$q" "$size"
	qcheck "$f"
	ref_new "$T/ref.raw" "$size"
	qcompare "$f" "$T/ref.raw" -F raw
	if ! diff <(shape "$q") <(shape "$f") >"$T/.diff"; then
		head -n 20 "$T/.diff" >&2
		fail "[$ctx] allocation differs from qemu's image (<)"
	fi
	local ai aq
	ai=$(alloc "$f")
	aq=$(alloc "$q")
	case $p in
	falloc | full)
		[ "$ai" -ge "$size" ] || fail "[$ctx] only $ai bytes allocated for a $size-byte image"
		;;
	esac
	# No more host space than qemu's image, give or take metadata placement
	# (less is fine: qemu interleaves small L2 tables with data clusters).
	local slack=$((4 * cs + 256 * 1024))
	[ "$ai" -le $((aq + aq / 8 + slack)) ] ||
		fail "[$ctx] img's image allocates $ai bytes, qemu's $aq"

	local ops
	mapfile -t ops < <(ops_basic "$cs" "$(l2span "$cs")" "$size")
	qemu_ops "$T/ref.raw" raw "${ops[@]}"
	img_ops "$f" qcow2 "${ops[@]}"
	qcheck "$f"
	qcompare "$f" "$T/ref.raw" -F raw

	ctx="$ctx, resize +$grow"
	must "$IMG" resize -q --preallocation="${p:-off}" "$f" "+$grow"
	must qemu-img resize -q --preallocation="${p:-off}" "$q" "+$grow"
	qcheck "$f"
	truncate -s $((size + grow)) "$T/ref.raw"
	qcompare "$f" "$T/ref.raw" -F raw
	qemu-img info --output=json "$f" | grep -q "\"virtual-size\": $((size + grow))," ||
		fail "[$ctx] virtual size is not $((size + grow)) after the resize"
	# Only the grown part's shape: the front differs after the writes.
	local front=$((size - size % cs))
	diff <(shape --start-offset=$front "$q") <(shape --start-offset=$front "$f") \
		>"$T/.diff" || {
		head -n 20 "$T/.diff" >&2
		fail "[$ctx] allocation of the grown part differs from qemu's (<)"
	}
}

for p in off metadata falloc full; do
	tcase one "preallocation=$p" $((16 * M)) $((8 * M)) 65536
	tcase one "preallocation=$p,cluster_size=4k" $((16 * M)) $((3 * M + 4096)) 4096
done
tcase one "preallocation=metadata,cluster_size=512" $((8 * M)) $M 512
tcase one "preallocation=metadata,compat=0.10" $((32 * M)) $((4 * M)) 65536
tcase one "preallocation=falloc,compat=0.10,cluster_size=2M" $((64 * M)) $((4 * M)) $((2 * M))
tcase one "preallocation=metadata,extended_l2=on" $((32 * M)) $((4 * M)) 65536
tcase one "preallocation=full,extended_l2=on,cluster_size=16k" $((16 * M)) $((2 * M)) 16384
tcase one "preallocation=metadata,lazy_refcounts=on,refcount_bits=1" $((32 * M)) $M 65536
finish
