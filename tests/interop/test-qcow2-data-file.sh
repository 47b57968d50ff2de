#!/bin/bash
# SPDX-License-Identifier: MIT
# qcow2 with an external data file (data_file=, with and without
# data_file_raw=on), both directions. img-made images: `qemu-img check` clean,
# `qemu-img compare` equal to a raw reference, and with data_file_raw the data
# file itself must hold the guest contents (it is a valid raw image). qemu-made
# images: img reads them byte-identical to qemu's raw export and `img check`
# is clean; img's writes into them keep qemu-img check clean. Data file names are absolute: QEMU
# 7.2 resolves a relative data_file name against its working directory, not
# the image's, so relative names are not portable between the two.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576
d=$T/df
mkdir -p "$d"

img_made() {
	local opts=$1 size=$2 cs=$3 raw=$4
	ctx="img: -o $opts"
	echo "== $ctx"
	rm -f "$d"/*
	(cd "$d" && must "$IMG" create -q -f qcow2 -o "$opts" img.qcow2 "$size")
	[ -f "$d/img.data" ] || fail "[$ctx] img create did not create the data file"
	must qemu-img info "$d/img.qcow2"
	grep -q "data file: $d/img.data" "$T/.must" || {
		cat "$T/.must" >&2
		fail "[$ctx] qemu-img info does not show the data file"
	}
	qcheck "$d/img.qcow2"
	local ops
	mapfile -t ops < <(ops_basic "$cs" "$(l2span "$cs")" "$size")
	ref_new "$T/ref.raw" "$size"
	qemu_ops "$T/ref.raw" raw "${ops[@]}"
	(cd / && img_ops "$d/img.qcow2" qcow2 "${ops[@]}")
	qcheck "$d/img.qcow2"
	qcompare "$d/img.qcow2" "$T/ref.raw" -F raw
	(cd / && icompare "$d/img.qcow2" "$T/ref.raw" -F raw)
	if [ "$raw" = raw ]; then
		qcompare "$d/img.data" "$T/ref.raw" -f raw -F raw
	fi
	# The metadata file holds no guest data: it stays small.
	local sz
	sz=$(stat -c %s "$d/img.qcow2")
	[ "$sz" -lt $((size / 4)) ] || fail "[$ctx] img.qcow2 is $sz bytes: data went into it?"

	ctx="img convert: -o $opts"
	rm -f "$d"/*
	(cd "$d" && must "$IMG" convert -f raw -O qcow2 -o "$opts" "$T/ref.raw" img.qcow2)
	qcheck "$d/img.qcow2"
	qcompare "$d/img.qcow2" "$T/ref.raw" -F raw
	if [ "$raw" = raw ]; then
		qcompare "$d/img.data" "$T/ref.raw" -f raw -F raw
	fi
}

qemu_made() {
	local opts=$1 size=$2 cs=$3
	ctx="qemu: -o $opts"
	echo "== $ctx"
	rm -f "$d"/*
	(cd "$d" && must qemu-img create -q -f qcow2 -o "$opts" img.qcow2 "$size")
	local ops
	mapfile -t ops < <(ops_basic "$cs" "$(l2span "$cs")" "$size" u)
	qemu_ops "$d/img.qcow2" qcow2 "${ops[@]}"
	qcheck "$d/img.qcow2"
	qemu_export "$d/img.qcow2" "$T/exp.raw"
	(cd / && img_reads_same "$d/img.qcow2" "$T/exp.raw")
	icheck "$d/img.qcow2"
	# img writes into qemu's image keep qemu happy too.
	ctx="qemu-made, img writes: -o $opts"
	img_ops "$d/img.qcow2" qcow2 "write -P 0xc1 $((3 * cs + 5)) $((cs * 2))" \
		"write -z $((cs / 2)) $cs" "write -P 0xc2 $((size - 3 * cs)) $((2 * cs))"
	qemu_ops "$T/exp.raw" raw "write -P 0xc1 $((3 * cs + 5)) $((cs * 2))" \
		"write -z $((cs / 2)) $cs" "write -P 0xc2 $((size - 3 * cs)) $((2 * cs))"
	qcheck "$d/img.qcow2"
	qcompare "$d/img.qcow2" "$T/exp.raw" -F raw
	case $opts in *data_file_raw=on*)
		qcompare "$d/img.data" "$T/exp.raw" -f raw -F raw ;;
	esac
}

tcase img_made "data_file=$d/img.data" $((64 * M)) 65536 ""
tcase img_made "data_file=$d/img.data,data_file_raw=on" $((64 * M)) 65536 raw
tcase img_made "data_file=$d/img.data,cluster_size=4k" $((64 * M)) 4096 ""
tcase img_made "data_file=$d/img.data,data_file_raw=on,cluster_size=512" $((16 * M)) 512 raw
tcase img_made "data_file=$d/img.data,data_file_raw=on,extended_l2=on,cluster_size=64k" $((64 * M)) 65536 raw
tcase qemu_made "data_file=$d/img.data" $((64 * M)) 65536
tcase qemu_made "data_file=$d/img.data,data_file_raw=on" $((64 * M)) 65536
tcase qemu_made "data_file=$d/img.data,cluster_size=4k,refcount_bits=4" $((64 * M)) 4096
tcase qemu_made "data_file=$d/img.data,data_file_raw=on,extended_l2=on,cluster_size=32k" $((64 * M)) 32768
finish
