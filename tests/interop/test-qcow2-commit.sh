#!/bin/bash
# SPDX-License-Identifier: MIT
# img commit against qemu-img commit on chains of depth 3 with mixed cluster
# sizes (64k base, 4k middle, 512-byte or extended-L2 top) and growing virtual
# sizes: img commits chains qemu made and qemu commits chains img made; the
# committed base reads the same as qemu-img's own commit of a copy, the top
# still reads as before (emptied, or untouched with -d / -b), every layer
# passes qemu-img check. Also a base smaller than the top (it grows) and a
# compat=0.10 base receiving zero ranges.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576

# build DIR MAKER TOPOPTS: base (64k, 4M) <- mid (4k, 6M) <- top (8M).
build() {
	local d=$1 who=$2 topopts=$3
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		if [ "$who" = img ]; then
			must "$IMG" create -q -f qcow2 base.qcow2 4M
			must "$IMG" create -q -f qcow2 -o cluster_size=4k \
				-b base.qcow2 -F qcow2 mid.qcow2 6M
			must "$IMG" create -q -f qcow2 -o "$topopts" \
				-b mid.qcow2 -F qcow2 top.qcow2 8M
		else
			must qemu-img create -q -f qcow2 base.qcow2 4M
			must qemu-img create -q -f qcow2 -o cluster_size=4k \
				-b base.qcow2 -F qcow2 mid.qcow2 6M
			must qemu-img create -q -f qcow2 -o "$topopts" \
				-b mid.qcow2 -F qcow2 top.qcow2 8M
		fi
	)
	local ops=img_ops
	[ "$who" = qemu ] && ops=qemu_ops
	$ops "$d/base.qcow2" qcow2 "write -P 0x11 0 3M" "write -z 100k 60k"
	$ops "$d/mid.qcow2" qcow2 "write -P 0x22 $((M + 4000)) 2M" \
		"write -z $((3 * M + 512)) 100k" "write -P 0x23 $((5 * M)) 64k" \
		"discard $((2 * M)) 128k"
	$ops "$d/top.qcow2" qcow2 "write -P 0x33 $((M + M / 2 + 7)) 1M" \
		"write -z $((M / 2)) 64k" "write -P 0x34 $((7 * M)) 512k" \
		"write -z -u $((5 * M)) 32k" "write -P 0x35 $((8 * M - 512)) 512"
	qemu_export "$d/top.qcow2" "$d/ref.raw"
}

# The top must no longer allocate anything itself.
top_empty() {
	qemu-img map --output=json "$1" | grep -q '"depth": 0' &&
		fail "[$ctx] $1 still allocates data after the commit"
	return 0
}

# commit_vs_qemu MAKER TOPOPTS [ARGS]: img commits one copy, qemu-img the
# other; the results agree.
commit_vs_qemu() {
	local who=$1 topopts=$2 arg keep=
	shift 2
	ctx="img commit $* ($who chain, top $topopts)"
	build "$T/i" "$who" "$topopts"
	build "$T/q" "$who" "$topopts"
	(cd "$T/i" && must "$IMG" commit -q "$@" top.qcow2)
	(cd "$T/q" && must qemu-img commit -q "$@" top.qcow2)
	for f in base mid top; do
		qcheck "$T/i/$f.qcow2"
		qcompare "$T/i/$f.qcow2" "$T/q/$f.qcow2"
	done
	qcompare "$T/i/top.qcow2" "$T/i/ref.raw"
	img_reads_same "$T/i/top.qcow2" "$T/i/ref.raw"
	# -d and -b leave the top as it was (compared with qemu's above).
	for arg in "$@"; do
		case $arg in -b | -d) keep=1 ;; esac
	done
	[ -n "${keep:-}" ] || top_empty "$T/i/top.qcow2"
	rm -rf "$T/i" "$T/q"
}

# qemu commits a chain img made; img reads and checks the result.
qemu_commits_img_chain() {
	ctx="qemu-img commit -b of an img chain"
	build "$T/i" img "cluster_size=512"
	(cd "$T/i" && must qemu-img commit -q -b base.qcow2 top.qcow2)
	icheck "$T/i/base.qcow2"
	qemu_export "$T/i/base.qcow2" "$T/i/base.raw"
	cmp "$T/i/base.raw" "$T/i/ref.raw" >/dev/null ||
		fail "[$ctx] base differs from the top's old contents"
	img_reads_same "$T/i/base.qcow2" "$T/i/ref.raw"
	rm -rf "$T/i"
}

# -b base: the base alone now holds the top's contents.
commit_to_base() {
	ctx="img commit -b base.qcow2"
	build "$T/i" qemu "cluster_size=64k,extended_l2=on"
	cp "$T/i/top.qcow2" "$T/top.before"
	cp "$T/i/mid.qcow2" "$T/mid.before"
	(cd "$T/i" && must "$IMG" commit -q -b base.qcow2 top.qcow2)
	qcheck "$T/i/base.qcow2"
	qemu_export "$T/i/base.qcow2" "$T/i/base.raw"
	cmp "$T/i/base.raw" "$T/i/ref.raw" >/dev/null ||
		fail "[$ctx] base differs from the top's old contents"
	cmp "$T/i/top.qcow2" "$T/top.before" >/dev/null ||
		fail "[$ctx] -b changed the top"
	cmp "$T/i/mid.qcow2" "$T/mid.before" >/dev/null ||
		fail "[$ctx] -b changed the middle layer"
	rm -rf "$T/i"
}

# A base smaller than the top grows to the top's size.
small_base() {
	ctx="img commit into a smaller base"
	mkdir -p "$T/s"
	(
		cd "$T/s" || exit 1
		must qemu-img create -q -f qcow2 b.qcow2 1M
		must qemu-io -c "write -P 0x41 0 1M" b.qcow2
		must qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 3M
		must qemu-io -c "write -P 0x42 $((M - 4096)) 8k" \
			-c "write -P 0x43 $((2 * M)) 4096" t.qcow2
		must qemu-img convert -O raw t.qcow2 ref.raw
		must "$IMG" commit -q t.qcow2
		qcheck b.qcow2
		qcheck t.qcow2
		[ "$(qemu-img info --output=json b.qcow2 |
			sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" = $((3 * M)) ] ||
			fail "[$ctx] base did not grow to 3M"
		qcompare b.qcow2 ref.raw
		qcompare t.qcow2 ref.raw
	)
	rm -rf "$T/s"
}

# A compat=0.10 base (no zero flag) takes the top's zero ranges.
v2_base() {
	ctx="img commit into a compat=0.10 base"
	mkdir -p "$T/v"
	(
		cd "$T/v" || exit 1
		must qemu-img create -q -f qcow2 -o compat=0.10 b.qcow2 2M
		must qemu-io -c "write -P 0x51 0 2M" b.qcow2
		must qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 2M
		must qemu-io -c "write -z 64k 128k" -c "write -z -u 1M 64k" \
			-c "write -P 0x52 300k 5000" t.qcow2
		must qemu-img convert -O raw t.qcow2 ref.raw
		must "$IMG" commit -q t.qcow2
		qcheck b.qcow2
		qcompare b.qcow2 ref.raw
		qcompare t.qcow2 ref.raw
	)
	rm -rf "$T/v"
}

tcase commit_vs_qemu qemu "cluster_size=512"
tcase commit_vs_qemu img "cluster_size=512"
tcase commit_vs_qemu qemu "cluster_size=64k,extended_l2=on"
tcase commit_vs_qemu img "cluster_size=16k" -d
tcase commit_vs_qemu qemu "cluster_size=4k" -b mid.qcow2
tcase qemu_commits_img_chain
tcase commit_to_base
tcase small_base
tcase v2_base
finish
