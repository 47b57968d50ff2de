#!/bin/bash
# SPDX-License-Identifier: MIT
# Direction qemu -> img: for each qcow2 geometry in the matrix, qemu-img
# creates the image and qemu-io writes patterns at unaligned offsets, zeroes
# (allocated zero clusters and unmapped ones), unaligned discards, across
# cluster and L2 boundaries. img must read it byte-identical to qemu's own raw
# export (img convert -O raw + cmp, img compare, img io read -P) and `img
# check` must find it clean. (`img map` against `qemu-img map`: test-qcow2-map.sh.)
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

one() {
	local opts=$1 size=$2
	shift 2
	local cs extl2 l2 f=$T/q.qcow2 exp=$T/exp.raw
	cs=$(echo ",$opts," | sed -n 's/.*,cluster_size=\([^,]*\),.*/\1/p')
	cs=${cs:-65536}
	case $cs in *k) cs=$((${cs%k} * 1024)) ;; *M) cs=$((${cs%M} * 1048576)) ;; esac
	extl2=$(echo ",$opts," | sed -n 's/.*,extended_l2=\([^,]*\),.*/\1/p')
	l2=$(l2span "$cs" "${extl2:-off}")
	ctx="-o $opts size=$size"
	echo "== $ctx"
	rm -f "$f"

	must qemu-img create -q -f qcow2 -o "$opts" "$f" "$size"
	# An empty image first: all zeroes.
	ref_new "$exp" "$size"
	img_reads_same "$f" "$exp"

	local ops
	mapfile -t ops < <(ops_basic "$cs" "$l2" "$size" u)
	ops+=("$@")
	qemu_ops "$f" qcow2 "${ops[@]}"
	qcheck "$f"
	qemu_export "$f" "$exp"
	img_reads_same "$f" "$exp"
	icheck "$f"
	# Spot checks through img io's own pattern verification.
	local tail=777
	[ "$cs" -lt 777 ] && tail=$((777 - cs))
	must "$IMG" io -f qcow2 -c "read -P 0x22 $((cs - 100)) 101" \
		-c "read -P 0x88 $((17 * cs + 5)) 10" -c "read -P 0 $((cs + 1)) $cs" \
		-c "read -P 0xee $((size - 777)) $tail" "$f"
}

M=1048576
for cs in 512 4k 64k 2M; do
	tcase one "cluster_size=$cs" $((64 * M))
done
tcase one "cluster_size=64k" $((1024 * M)) "write -P 0x5b $((512 * M - 65536)) $((3 * 65536))" \
	"write -z $((512 * M - 100)) 200"
for rb in 1 2 4 8 16 32 64; do
	tcase one "cluster_size=4k,refcount_bits=$rb" $((64 * M))
done
tcase one "cluster_size=512,refcount_bits=64" $((64 * M)) "write -P 0x5a $M $((6 * M))" \
	"write -z -u $((2 * M)) $M" "discard $((5 * M + 100)) $M"
tcase one "compat=0.10,cluster_size=512" $((64 * M))
tcase one "compat=0.10" $((64 * M))
for cs in 16k 64k 2M; do
	# Subclusters: partial-cluster writes and zeroes allocate 1/32 of a cluster.
	s=$(($(echo $cs | tr -d kM) * 1024 / 32))
	[ $cs = 2M ] && s=65536
	tcase one "extended_l2=on,cluster_size=$cs" $((64 * M)) \
		"write -P 0x61 $((30 * s * 32 + 3 * s)) $s" \
		"write -z $((30 * s * 32 + 5 * s)) $((2 * s))" \
		"write -P 0x62 $((31 * s * 32 + s / 2)) $((s * 3))" \
		"discard $((31 * s * 32 + s)) $s"
done
tcase one "lazy_refcounts=on,cluster_size=4k" $((64 * M))
tcase one "cluster_size=4k,preallocation=metadata" $((64 * M))
tcase one "cluster_size=64k,preallocation=falloc" $((32 * M))
finish
