#!/bin/bash
# SPDX-License-Identifier: MIT
# Backing chains of depth 1 to 3, both directions and mixed: qemu-made chains
# read by img (byte-identical to qemu's raw export of the top),
# img-made chains checked and compared by qemu-img against a raw reference
# that received every layer's writes in order, and chains whose layers come
# alternately from img and qemu. Layers vary cluster size, compat, extended
# L2 and virtual size (an overlay larger than its backing reads zeroes past
# the backing's end); backing names are relative to the overlay.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576
chain=$T/chain
mkdir -p "$chain"

# Ops for layer k (1-based) of a chain with cluster size cs: partial-cluster
# writes over backing data, zeroes over it (with and without unmap), and a
# write past the backing's end when the layer is larger.
layer_ops() {
	local k=$1 cs=$2 size=$3
	echo "write -P 0x${k}1 $((k * cs / 2 + 7)) $((3 * cs))"
	echo "write -z $((2 * k * cs + 100)) $cs"
	echo "write -P 0x${k}2 $((8 * cs + k * 1000)) 5000"
	echo "write -z -u $((12 * cs + k * cs)) $cs"
	echo "write -P 0x${k}3 $((20 * cs + k * 333)) $((cs / 2 + k))"
	echo "write -P 0x${k}4 $((size - k * cs - 5)) $((k * cs / 2 + 5))"
	echo "write -P 0x${k}5 $((4 * M + k * 512)) $((k * 4096))"
}

# make_chain MAKER SPEC...: SPEC is "fmt:opts:size" per layer, base first
# (opts may be empty). MAKER is "img", "qemu" or "alt" (alternate, img first)
# for both creating and writing each layer. Builds layer0.. in $chain with
# relative backing names, and $T/ref.raw with every layer's writes.
make_chain() {
	local maker=$1
	shift
	local i=0 spec fmt opts size cs prev="" who ops f
	rm -f "$chain"/* "$T/ref.raw"
	for spec in "$@"; do
		IFS=: read -r fmt opts size <<<"$spec"
		who=$maker
		if [ "$maker" = alt ]; then
			who=img
			[ $((i % 2)) = 1 ] && who=qemu
		fi
		f=layer$i.$fmt
		local co=()
		[ -n "$opts" ] && co=(-o "$opts")
		[ -n "$prev" ] && co+=(-b "$prev" -F "${prev##*.}")
		if [ "$who" = img ]; then
			(cd "$chain" && must "$IMG" create -q -f "$fmt" "${co[@]}" "$f" "$size")
		else
			(cd "$chain" && must qemu-img create -q -f "$fmt" "${co[@]}" "$f" "$size")
		fi
		[ -f "$chain/$f" ] || fail "[$ctx] $who create $f"
		cs=$(qemu-img info "$chain/$f" | sed -n 's/^cluster_size: //p')
		cs=${cs:-65536}
		mapfile -t ops < <(layer_ops $((i + 1)) "$cs" "$size")
		if [ -f "$T/ref.raw" ]; then
			truncate -s "$size" "$T/ref.raw"
		else
			ref_new "$T/ref.raw" "$size"
		fi
		qemu_ops "$T/ref.raw" raw "${ops[@]}"
		if [ "$who" = img ]; then
			img_ops "$chain/$f" "$fmt" "${ops[@]}"
		else
			qemu_ops "$chain/$f" "$fmt" "${ops[@]}"
		fi
		prev=$f
		i=$((i + 1))
	done
	top=$chain/$prev
}

# Verify the chain built by make_chain from every side.
verify_chain() {
	local f
	for f in "$chain"/layer*.qcow2; do
		qcheck "$f"
	done
	qcompare "$top" "$T/ref.raw" -F raw
	# Read from another working directory: relative names resolve against
	# the overlay, not the cwd.
	(cd / && img_reads_same "$top" "$T/ref.raw")
	must "$IMG" info --backing-chain "$top"
	local n
	n=$(grep -c '^image: ' "$T/.must")
	[ "$n" = "$#" ] || fail "[$ctx] img info --backing-chain shows $n images, expected $#"
}

run_case() {
	local maker=$1
	shift
	ctx="$maker: $*"
	echo "== $ctx"
	make_chain "$maker" "$@"
	verify_chain "$@"
}

for maker in qemu img alt; do
	tcase run_case $maker "qcow2::$((32 * M))" "qcow2::$((32 * M))"
	tcase run_case $maker "qcow2:cluster_size=4k:$((32 * M))" \
		"qcow2:cluster_size=64k:$((32 * M))" "qcow2:cluster_size=512:$((32 * M))"
	tcase run_case $maker "qcow2:compat=0.10:$((16 * M))" "qcow2:compat=0.10,cluster_size=4k:$((16 * M))" \
		"qcow2:compat=0.10:$((16 * M))"
	tcase run_case $maker "qcow2:cluster_size=64k:$((16 * M))" \
		"qcow2:extended_l2=on,cluster_size=64k:$((16 * M))" \
		"qcow2:extended_l2=on,cluster_size=32k:$((16 * M))"
	# Each overlay larger than its backing.
	tcase run_case $maker "qcow2:cluster_size=4k:$((8 * M))" "qcow2:cluster_size=4k:$((12 * M))" \
		"qcow2::$((24 * M))"
	tcase run_case $maker "raw::$((16 * M))" "qcow2:cluster_size=4k:$((16 * M))" \
		"qcow2:lazy_refcounts=on:$((16 * M))"
done
# Depth 3: three backing files under the top.
tcase run_case alt "qcow2:cluster_size=4k:$((8 * M))" "qcow2:cluster_size=4k:$((8 * M))" \
	"qcow2:cluster_size=64k:$((8 * M))" "qcow2:compat=1.1:$((8 * M))"
finish
