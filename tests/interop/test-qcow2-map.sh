#!/bin/bash
# SPDX-License-Identifier: MIT
# `img map` prints what `qemu-img map` 7.2 prints, in JSON and in the human
# table, for qemu-made qcow2 images that exercise every kind of extent: data,
# unallocated, zero clusters with and without a host offset, extended-L2
# subclusters, metadata preallocation, v2 images, external data files and
# backing chains (depth, and raw backing), plus --start-offset/--max-length.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576

same_map() {
	local f=$1 args
	shift
	for args in "--output=json" "--output=human" \
		"--output=json --start-offset=$((M + 512)) --max-length=$((3 * M + 7))"; do
		# shellcheck disable=SC2086
		qemu-img map $args "$@" "$f" >"$T/qemu.map" 2>&1
		# shellcheck disable=SC2086
		"$IMG" map $args "$@" "$f" >"$T/img.map" 2>&1
		if ! diff "$T/qemu.map" "$T/img.map" >"$T/.diff"; then
			head -n 20 "$T/.diff" >&2
			fail "[$ctx] img map $args differs from qemu-img map (<)"
		fi
	done
}

one() {
	local opts=$1
	shift
	ctx="-o $opts"
	echo "== $ctx"
	rm -f "$T"/m.*
	must qemu-img create -q -f qcow2 -o "$opts" "$T/m.qcow2" $((16 * M))
	qemu_ops "$T/m.qcow2" qcow2 "write -P 0x11 0 100k" "write -z $((M - 4096)) 200k" \
		"write -P 0x12 $((2 * M + 3)) 5000" "write -z -u $((2 * M)) 64k" \
		"write -P 0x13 $((4 * M)) $((2 * M))" "discard $((5 * M)) 64k" \
		"write -z $((4 * M + 64 * 1024)) 64k" "write -P 0x14 $((16 * M - 1000)) 1000" "$@"
	same_map "$T/m.qcow2"
}

chain() {
	ctx="chain: $*"
	echo "== $ctx"
	rm -f "$T"/m.*
	local base=$1 mid=$2
	must qemu-img create -q -f "${base%%:*}" ${base#*:} "$T/m.base" $((8 * M))
	qemu_ops "$T/m.base" "${base%%:*}" "write -P 0x21 0 3M" "write -P 0x22 $((6 * M)) 1M"
	must qemu-img create -q -f qcow2 $mid -b "$T/m.base" -F "${base%%:*}" "$T/m.mid" $((12 * M))
	qemu_ops "$T/m.mid" qcow2 "write -P 0x23 $((M + 5)) 64k" "write -z $((2 * M)) 64k" \
		"write -P 0x24 $((10 * M)) 64k"
	must qemu-img create -q -f qcow2 -b "$T/m.mid" -F qcow2 "$T/m.top" $((12 * M))
	qemu_ops "$T/m.top" qcow2 "write -P 0x25 $((2 * M)) 4k" "discard $((6 * M)) 64k"
	same_map "$T/m.top"
}

tcase one "cluster_size=64k"
tcase one "cluster_size=512"
tcase one "cluster_size=2M"
tcase one "compat=0.10,cluster_size=4k"
tcase one "extended_l2=on,cluster_size=64k" "write -P 0x15 $((8 * M + 2048)) 2048" \
	"write -z $((8 * M + 8192)) 4096"
tcase one "extended_l2=on,cluster_size=32k,preallocation=metadata"
tcase one "cluster_size=4k,preallocation=metadata"
tcase one "preallocation=falloc"
tcase one "data_file=$T/m.data"
tcase one "data_file=$T/m.data,data_file_raw=on"
tcase chain "qcow2:" ""
tcase chain "qcow2:-o cluster_size=4k" "-o extended_l2=on"
tcase chain "raw:" "-o cluster_size=512"
finish
