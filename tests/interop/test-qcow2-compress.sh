#!/bin/bash
# SPDX-License-Identifier: MIT
# Compressed qcow2 clusters against qemu-img, both directions, for zlib and
# zstd and cluster sizes 4 KiB to 2 MiB (and extended L2, compat=0.10):
#  - qemu-img convert -c images read byte-identical through img, and img
#    check finds them clean;
#  - img convert -c images pass qemu-img check and compare equal to the
#    source; with 64 KiB clusters the zstd file is byte-identical to
#    qemu-img's (same packing of the compressed data; img deflates with
#    libdeflate, so zlib files differ: their size is within 5%);
#  - deflate streams whose matches reach further back than QEMU's 4 KiB
#    window (libdeflate's 32 KiB) read back right through qemu-img;
#  - writes, zeroes and discards over compressed clusters (img io on qemu's
#    image, qemu-io on img's image, and img io on img's image) leave images
#    that qemu-img check finds clean and that hold the expected data.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576
SRC=$T/src.raw
# 6 MiB + 1000 bytes: runs of zeroes, random data, text, a lone non-zero
# byte in a zero stretch, and a short tail.
make_src() {
	local i
	rm -f "$SRC"
	for i in 0 1 2; do
		head -c $((M / 2)) /dev/zero
		head -c $((M / 2)) /dev/urandom
		yes "compressible line $i of the img compression interop test" |
			head -c $M
	done >"$SRC"
	printf 'x' | dd of="$SRC" bs=1 seek=$((4 * M + 12345)) conv=notrunc status=none
	head -c 1000 /dev/urandom >>"$SRC"
}
make_src
SIZE=$(stat -c %s "$SRC")
# Both tools round the virtual size up to 512 bytes.
RSIZE=$(((SIZE + 511) / 512 * 512))
REF=$T/ref.raw
cp "$SRC" "$REF" && truncate -s "$RSIZE" "$REF"

# Offsets inside the data; lengths of at most 64 KiB, so that every cluster
# size gets partial writes over compressed clusters.
ops_over() {
	local c=$1
	[ "$c" -gt 65536 ] && c=65536
	echo "write -P 0x11 $((M / 2 + 100)) 5000"
	echo "write -P 0x22 $((3 * M / 2 - 7)) $((c + 14))"
	echo "write -z $((2 * M + c)) $c"
	echo "write -z -u $((3 * M)) $((2 * c))"
	echo "discard $((4 * M)) $((2 * M))"
	echo "write -P 0x33 $((5 * M + 1)) 1"
	echo "write -P 0x44 $((RSIZE - 300)) 300"
}

one() {
	local ct=$1 opts=$2 cs=$3
	local q=$T/q.qcow2 i=$T/i.qcow2 r=$T/r.raw
	ctx="$ct $opts"
	echo "== $ctx"
	rm -f "$q" "$i"

	# qemu -> img
	must qemu-img convert -c -f raw -O qcow2 -o "compression_type=$ct,$opts" "$SRC" "$q"
	img_reads_same "$q" "$REF"
	icheck "$q"
	"$IMG" info --output=json "$q" | grep -q '"compressed-clusters": [1-9]' ||
		fail "[$ctx] img info does not report the compressed clusters"

	# img -> qemu
	must "$IMG" convert -c -f raw -O qcow2 -o "compression_type=$ct,$opts" "$SRC" "$i"
	qcheck "$i"
	qcompare "$i" "$REF" -f qcow2 -F raw
	qemu-img check "$i" | grep -q 'compressed clusters' ||
		fail "[$ctx] qemu-img check sees no compressed clusters in img's image"
	if [ "$cs" = 65536 ] && [ "$ct" = zstd ]; then
		cmp "$q" "$i" >/dev/null ||
			fail "[$ctx] img convert -c is not byte-identical to qemu-img convert -c"
	elif [ "$cs" = 65536 ]; then
		local qs is
		qs=$(stat -c %s "$q")
		is=$(stat -c %s "$i")
		[ $((is * 100)) -le $((qs * 105)) ] ||
			fail "[$ctx] img's file is $is bytes, qemu-img's $qs (over 5% more)"
	fi

	# Writes over compressed clusters: img on qemu's image, qemu on img's
	# image, img on img's image; the raw reference gets the same ops.
	local ops
	mapfile -t ops < <(ops_over "$cs")
	cp "$REF" "$r"
	qemu_ops "$r" raw "${ops[@]}"
	cp "$i" "$T/i2.qcow2"
	img_ops "$q" qcow2 "${ops[@]}"
	qcheck "$q"
	qcompare "$q" "$r" -f qcow2 -F raw
	qemu_ops "$i" qcow2 "${ops[@]}"
	icheck "$i"
	img_reads_same "$i" "$r"
	img_ops "$T/i2.qcow2" qcow2 "${ops[@]}"
	qcheck "$T/i2.qcow2"
	qcompare "$T/i2.qcow2" "$r" -f qcow2 -F raw
}

for ct in zlib zstd; do
	tcase one "$ct" "cluster_size=4k" 4096
	tcase one "$ct" "cluster_size=16k" 16384
	tcase one "$ct" "cluster_size=64k" 65536
	tcase one "$ct" "cluster_size=2M" $((2 * M))
done
tcase one zstd "cluster_size=64k,extended_l2=on" 65537
tcase one zlib "cluster_size=32k,refcount_bits=1" 32769
tcase one zlib "compat=0.10,cluster_size=64k" 65537

# Every cluster three copies of 21 KiB of random bytes: deflate can shrink
# it only with matches 21 KiB back, beyond QEMU's 4 KiB window.
far() {
	local cs=$1 f=$T/far.raw
	ctx="zlib far matches, cluster_size=$cs"
	rm -f "$f" "$T/far.qcow2"
	for _ in 1 2 3 4; do
		head -c 21504 /dev/urandom >"$T/blk"
		cat "$T/blk" "$T/blk" "$T/blk"
		head -c 1024 /dev/zero
	done >"$f"
	must "$IMG" convert -c -O qcow2 -o compression_type=zlib,cluster_size=$cs "$f" "$T/far.qcow2"
	qemu-img check "$T/far.qcow2" | grep -q 'compressed clusters' ||
		fail "[$ctx] the clusters were not stored compressed"
	qcheck "$T/far.qcow2"
	qcompare "$T/far.qcow2" "$f" -f qcow2 -F raw
}
tcase far 64k
tcase far 2M

# A zstd level other than the default still gives a valid image.
level() {
	ctx="zstd level 19"
	rm -f "$T/l.qcow2"
	must "$IMG" convert -c -O qcow2 -o compression_type=zstd,compression_level=19 "$SRC" "$T/l.qcow2"
	qcheck "$T/l.qcow2"
	qcompare "$T/l.qcow2" "$REF" -f qcow2 -F raw
}
tcase level
finish
