#!/bin/bash
# SPDX-License-Identifier: MIT
# img rebase against qemu-img rebase on chains of depth 3 with mixed cluster
# sizes: safe rebase onto an unrelated image shorter and longer than the top,
# onto a layer further down the chain, onto nothing (-b ""), and unsafe (-u).
# In safe mode the top must read exactly as before and as qemu-img's rebase
# of a copy; every image passes qemu-img check; qemu-img rebases chains img
# made and img reads the result.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576

# build DIR MAKER TOPOPTS: base (64k, 4M) <- mid (4k, 6M) <- top (8M), and
# two unrelated images: short.qcow2 (2M, 16k) and long.qcow2 (12M, 512 B).
build() {
	local d=$1 who=$2 topopts=$3 create=("$IMG" create) ops=img_ops
	[ "$who" = qemu ] && create=(qemu-img create) && ops=qemu_ops
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		must "${create[@]}" -q -f qcow2 base.qcow2 4M
		must "${create[@]}" -q -f qcow2 -o cluster_size=4k \
			-b base.qcow2 -F qcow2 mid.qcow2 6M
		must "${create[@]}" -q -f qcow2 -o "$topopts" \
			-b mid.qcow2 -F qcow2 top.qcow2 8M
		must "${create[@]}" -q -f qcow2 -o cluster_size=16k short.qcow2 2M
		must "${create[@]}" -q -f qcow2 -o cluster_size=512 long.qcow2 12M
	)
	$ops "$d/base.qcow2" qcow2 "write -P 0x11 0 3M" "write -z 100k 60k"
	$ops "$d/mid.qcow2" qcow2 "write -P 0x22 $((M + 4000)) 2M" \
		"write -z $((3 * M + 512)) 100k" "write -P 0x23 $((5 * M)) 64k"
	$ops "$d/top.qcow2" qcow2 "write -P 0x33 $((M + M / 2 + 7)) 1M" \
		"write -z $((M / 2)) 64k" "write -P 0x34 $((7 * M)) 512k"
	# Partly equal to the old chain, so that not everything is copied.
	$ops "$d/short.qcow2" qcow2 "write -P 0x11 0 1M" "write -P 0x61 1M 1M"
	$ops "$d/long.qcow2" qcow2 "write -P 0x11 4096 2M" \
		"write -P 0x71 $((6 * M)) 5M"
	qemu_export "$d/top.qcow2" "$d/ref.raw"
}

backing_of() {
	qemu-img info --output=json "$1" |
		sed -n 's/^    "backing-filename": "\(.*\)",$/\1/p'
}

# rebase_vs_qemu MAKER TOPOPTS NEW: safe rebase of top onto NEW by img and
# by qemu-img (on copies); both read as before and as each other.
rebase_vs_qemu() {
	local who=$1 topopts=$2 new=$3 fargs=()
	ctx="img rebase -b '$new' ($who chain, top $topopts)"
	[ -n "$new" ] && fargs=(-F qcow2)
	build "$T/i" "$who" "$topopts"
	build "$T/q" "$who" "$topopts"
	(cd "$T/i" && md5sum base.qcow2 mid.qcow2 short.qcow2 long.qcow2 >sums)
	(cd "$T/i" && must "$IMG" rebase -q -b "$new" "${fargs[@]}" top.qcow2)
	(cd "$T/q" && must qemu-img rebase -q -b "$new" "${fargs[@]}" top.qcow2)
	qcheck "$T/i/top.qcow2"
	qcompare "$T/i/top.qcow2" "$T/i/ref.raw"
	qcompare "$T/i/top.qcow2" "$T/q/top.qcow2"
	img_reads_same "$T/i/top.qcow2" "$T/i/ref.raw"
	[ "$(backing_of "$T/i/top.qcow2")" = "$new" ] ||
		fail "[$ctx] backing is '$(backing_of "$T/i/top.qcow2")'"
	(cd "$T/i" && md5sum -c --quiet sums) || fail "[$ctx] another image changed"
	rm -rf "$T/i" "$T/q"
}

unsafe() {
	ctx="img rebase -u"
	build "$T/i" qemu "cluster_size=512"
	mv "$T/i/mid.qcow2" "$T/i/moved.qcow2"
	(cd "$T/i" && must "$IMG" rebase -u -b moved.qcow2 -F qcow2 top.qcow2)
	qcheck "$T/i/top.qcow2"
	qcompare "$T/i/top.qcow2" "$T/i/ref.raw"
	[ "$(backing_of "$T/i/top.qcow2")" = moved.qcow2 ] ||
		fail "[$ctx] backing name not rewritten"
	rm -rf "$T/i"
}

qemu_rebases_img_chain() {
	ctx="qemu-img rebase of an img chain"
	build "$T/i" img "cluster_size=64k,extended_l2=on"
	(cd "$T/i" && must qemu-img rebase -q -b long.qcow2 -F qcow2 top.qcow2)
	icheck "$T/i/top.qcow2"
	img_reads_same "$T/i/top.qcow2" "$T/i/ref.raw"
	rm -rf "$T/i"
}

tcase rebase_vs_qemu qemu "cluster_size=512" short.qcow2
tcase rebase_vs_qemu qemu "cluster_size=64k,extended_l2=on" long.qcow2
tcase rebase_vs_qemu img "cluster_size=4k" base.qcow2
tcase rebase_vs_qemu img "cluster_size=16k,compat=0.10" ""
tcase rebase_vs_qemu qemu "cluster_size=4k" mid.qcow2
tcase unsafe
tcase qemu_rebases_img_chain
finish
