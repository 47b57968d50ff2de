#!/bin/bash
# SPDX-License-Identifier: MIT
# Images made by qemu-img, then truncated (cut in the middle of their data,
# or just before their last block), and a qcow2 whose L2 entry points past
# the end of the file. img used to read the lost data as zeroes with exit 0
# and call some of them clean. Now: VHD, VDI and VHDX refuse to open (as
# qemu-img does for VHD and VHDX; it reads VDI as zeroes), check reports
# each with exit 2, and qcow2/VMDK reads of data past the end fail naming the
# guest and host offsets. What qemu-img does with each is printed. Images
# whose data ends exactly at the end of the file (compressed clusters whose
# last sector is cut short, preallocation, data files, flat extents) still
# read right.
. "$(dirname "$0")/interop-lib.sh"
requires truncate python3

head -c $((4 << 20)) /dev/urandom >"$T/d.raw"

# What qemu-img says about FILE: info, check and convert exit codes.
qemu_says() {
	local f=$1 rc
	qemu-img info "$f" >/dev/null 2>"$T/q.err"
	rc=$?
	echo "  qemu-img info: exit $rc $(head -n1 "$T/q.err")"
	qemu-img check "$f" >"$T/q.out" 2>&1
	rc=$?
	echo "  qemu-img check: exit $rc $(grep -m1 -i "error\|no errors" "$T/q.out")"
	qemu-img convert -O raw "$f" "$T/q.raw" 2>/dev/null
	echo "  qemu-img convert: exit $?"
}

# cut SRC DST SIZE: copy SRC to DST and truncate it to SIZE bytes.
cut_to() {
	cp "$1" "$2" && truncate -s "$3" "$2"
}

# img refuses to open FILE (info, convert) with one line naming the
# truncation, and check reports it with exit 2.
refused_at_open() {
	local f=$1 rc
	"$IMG" info "$f" >/dev/null 2>"$T/err"
	rc=$?
	[ "$rc" = 1 ] || fail "[$ctx] info exit $rc, want 1"
	grep -q "the image has been truncated" "$T/err" ||
		{ cat "$T/err" >&2; fail "[$ctx] info gave no reason"; }
	[ "$(wc -l <"$T/err")" = 1 ] || fail "[$ctx] more than one line"
	echo "  img info: $(cat "$T/err")"
	expect_exit 1 "$IMG" convert -O raw "$f" "$T/o.raw"
	"$IMG" check "$f" >"$T/out" 2>&1
	rc=$?
	[ "$rc" = 2 ] || { cat "$T/out" >&2; fail "[$ctx] check exit $rc, want 2"; }
	grep -q "^ERROR .*past the end of the file" "$T/out" ||
		{ cat "$T/out" >&2; fail "[$ctx] check names no block"; }
	echo "  img check: exit 2 $(grep -m1 ^ERROR "$T/out")"
}

# img opens FILE but reading the lost data fails (convert, dd) with the
# guest and host offsets; check exits 2.
read_fails() {
	local f=$1 rc
	"$IMG" convert -O raw "$f" "$T/o.raw" 2>"$T/err"
	rc=$?
	[ "$rc" = 1 ] || fail "[$ctx] convert exit $rc, want 1"
	grep -Eq "guest offset 0x[0-9a-f]+ maps to host offset 0x[0-9a-f]+ past the end of '.*' \(size [0-9]+\)" "$T/err" ||
		{ cat "$T/err" >&2; fail "[$ctx] convert gave no offsets"; }
	echo "  img convert: exit 1 $(cat "$T/err")"
	"$IMG" dd -O raw if="$f" of="$T/dd.raw" bs=1M 2>"$T/err"
	rc=$?
	[ "$rc" = 1 ] || fail "[$ctx] dd exit $rc, want 1"
	grep -q "past the end of" "$T/err" || fail "[$ctx] dd gave no reason"
	"$IMG" check "$f" >"$T/out" 2>&1
	rc=$?
	[ "$rc" = 2 ] || { cat "$T/out" >&2; fail "[$ctx] check exit $rc, want 2"; }
	echo "  img check: exit 2 $(grep -m1 ^ERROR "$T/out")"
}

reads_same() {
	must "$IMG" convert -O raw "$1" "$T/same.raw"
	# vpc rounds the size up to a CHS geometry: compare the data's part.
	cmp -n "$(stat -c %s "$2")" "$T/same.raw" "$2" >/dev/null ||
		fail "[$ctx] $1 reads wrong"
}

# A dynamic image of qemu-img format $1 (file suffix $2), cut in the middle
# and $3 bytes before its end ($4 says where that is): both refused at open;
# the whole file reads the same as the raw source.
dynamic_cases() {
	local fmt=$1 ext=$2 tail=$3 where=$4 sz
	must qemu-img convert -f raw -O "$fmt" "$T/d.raw" "$T/d.$ext"
	sz=$(stat -c %s "$T/d.$ext")
	ctx="$fmt cut in the middle"
	cut_to "$T/d.$ext" "$T/t1.$ext" $((sz / 2))
	echo "$ctx:"; qemu_says "$T/t1.$ext"
	refused_at_open "$T/t1.$ext"
	ctx="$fmt cut $where"
	cut_to "$T/d.$ext" "$T/t2.$ext" $((sz - tail))
	echo "$ctx:"; qemu_says "$T/t2.$ext"
	refused_at_open "$T/t2.$ext"
	ctx="$fmt whole"
	reads_same "$T/d.$ext" "$T/d.raw"
}

# The last VHD block ends 1024 bytes before the footer copy's end: cutting
# that much cuts its last sector (the file then also lacks its final footer).
vpc_cases() { dynamic_cases vpc vhd 1024 "in its last block"; }
vdi_cases() { dynamic_cases vdi vdi 1 "before its last byte"; }

vhdx_cases() {
	local sz
	need_format vhdx
	must qemu-img convert -f raw -O vhdx "$T/d.raw" "$T/d.vhdx"
	sz=$(stat -c %s "$T/d.vhdx")
	ctx="vhdx cut before its block"
	cut_to "$T/d.vhdx" "$T/t1.vhdx" $((sz / 2))
	echo "$ctx:"; qemu_says "$T/t1.vhdx"
	refused_at_open "$T/t1.vhdx"
	ctx="vhdx whole"
	reads_same "$T/d.vhdx" "$T/d.raw"
}

qcow2_cases() {
	local sz l2
	must qemu-img convert -f raw -O qcow2 "$T/d.raw" "$T/d.qcow2"
	sz=$(stat -c %s "$T/d.qcow2")
	ctx="qcow2 cut in the middle"
	cut_to "$T/d.qcow2" "$T/t1.qcow2" $((sz / 2))
	echo "$ctx:"; qemu_says "$T/t1.qcow2"
	read_fails "$T/t1.qcow2"
	ctx="qcow2 cut before its last byte"
	cut_to "$T/d.qcow2" "$T/t2.qcow2" $((sz - 1))
	echo "$ctx:"; qemu_says "$T/t2.qcow2"
	read_fails "$T/t2.qcow2"
	ctx="qcow2 whole"
	reads_same "$T/d.qcow2" "$T/d.raw"

	# An L2 entry moved far past the end (the file keeps its size): the
	# first L2 table's first entry gets host offset 1 TiB.
	ctx="qcow2 L2 entry past the end"
	cp "$T/d.qcow2" "$T/l2.qcow2"
	l2=$(python3 - "$T/l2.qcow2" <<'EOF'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(48)
l1_off = struct.unpack(">Q", h[40:48])[0]
f.seek(l1_off)
l2_off = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
f.seek(l2_off)
e = struct.unpack(">Q", f.read(8))[0]
f.seek(l2_off)
f.write(struct.pack(">Q", (e & ~0x00fffffffffffe00) | (1 << 40)))
print(l2_off)
EOF
	) || fail "[$ctx] cannot edit the L2 table"
	[ -n "$l2" ] || fail "[$ctx] no L2 table"
	echo "$ctx:"; qemu_says "$T/l2.qcow2"
	read_fails "$T/l2.qcow2"
	grep -q "guest offset 0x0 maps to host offset 0x10000000000" "$T/err" ||
		"$IMG" convert -O raw "$T/l2.qcow2" "$T/o.raw" 2>&1 |
		grep -q "guest offset 0x0 maps to host offset 0x10000000000" ||
		fail "[$ctx] wrong offsets"

	# Compressed: qemu-img leaves the last cluster's descriptor naming a
	# whole last sector that the file may end inside; that reads right.
	ctx="qcow2 compressed"
	python3 -c 'import random, sys
random.seed(7)
sys.stdout.buffer.write(b"".join(b"%08d compressible " % random.randrange(10**8)
	for _ in range(4 << 16)))' | head -c $((4 << 20)) >"$T/z.raw"
	must qemu-img convert -c -f raw -O qcow2 "$T/z.raw" "$T/c.qcow2"
	qemu-img check "$T/c.qcow2" | grep -q "[1-9][0-9.]*% compressed" ||
		fail "[$ctx] qemu-img wrote no compressed cluster"
	reads_same "$T/c.qcow2" "$T/z.raw"
	sz=$(stat -c %s "$T/c.qcow2")
	[ $((sz % 512)) != 0 ] || echo "  (the last compressed cluster ends on a sector)"
	cut_to "$T/c.qcow2" "$T/tc.qcow2" $((sz * 3 / 4))
	ctx="qcow2 compressed cut"
	echo "$ctx:"; qemu_says "$T/tc.qcow2"
	read_fails "$T/tc.qcow2"

	# An external data file cut short.
	ctx="qcow2 data file"
	must qemu-img create -f qcow2 -o data_file="$T/df.raw" "$T/df.qcow2" 4M
	must qemu-io -f qcow2 -c "write -P 0x5a 0 4M" "$T/df.qcow2"
	must "$IMG" convert -O raw "$T/df.qcow2" "$T/df-all.raw"
	truncate -s 1M "$T/df.raw"
	echo "$ctx:"; qemu_says "$T/df.qcow2"
	"$IMG" convert -O raw "$T/df.qcow2" "$T/o.raw" 2>"$T/err" &&
		fail "[$ctx] convert exit 0"
	grep -q "guest offset 0x100000 maps to host offset 0x100000 past the end of '.*df.raw' (size 1048576)" "$T/err" ||
		{ cat "$T/err" >&2; fail "[$ctx] wrong message"; }
	echo "  img convert: $(cat "$T/err")"
	"$IMG" check "$T/df.qcow2" >"$T/out" 2>&1
	[ $? = 2 ] || { cat "$T/out" >&2; fail "[$ctx] check did not report it"; }
	echo "  img check: exit 2 $(grep -m1 ^ERROR "$T/out")"

	# Preallocated images end exactly at their last cluster.
	ctx="qcow2 preallocation"
	for p in metadata falloc full; do
		must qemu-img create -f qcow2 -o preallocation=$p "$T/p.qcow2" 4M
		must qemu-io -f qcow2 -c "write -P 0x11 1M 64k" "$T/p.qcow2"
		must "$IMG" convert -O raw "$T/p.qcow2" "$T/p.raw"
		rm -f "$T/p.qcow2"
	done
}

vmdk_cases() {
	local sz
	must qemu-img convert -f raw -O vmdk "$T/d.raw" "$T/d.vmdk"
	sz=$(stat -c %s "$T/d.vmdk")
	ctx="vmdk cut in the middle"
	cut_to "$T/d.vmdk" "$T/t1.vmdk" $((sz / 2))
	echo "$ctx:"; qemu_says "$T/t1.vmdk"
	read_fails "$T/t1.vmdk"
	ctx="vmdk whole"
	reads_same "$T/d.vmdk" "$T/d.raw"

	ctx="vmdk flat extent cut short"
	must qemu-img convert -f raw -O vmdk -o subformat=monolithicFlat \
		"$T/d.raw" "$T/f.vmdk"
	reads_same "$T/f.vmdk" "$T/d.raw"
	truncate -s 1M "$T/f-flat.vmdk"
	echo "$ctx:"; qemu_says "$T/f.vmdk"
	"$IMG" convert -O raw "$T/f.vmdk" "$T/o.raw" 2>"$T/err" &&
		fail "[$ctx] convert exit 0"
	grep -q "guest offset 0x100000 maps to host offset 0x100000 past the end of '.*f-flat.vmdk' (size 1048576)" "$T/err" ||
		{ cat "$T/err" >&2; fail "[$ctx] wrong message"; }
	echo "  img convert: $(cat "$T/err")"
}

tcase vpc_cases
tcase vdi_cases
tcase vhdx_cases
tcase qcow2_cases
tcase vmdk_cases
finish
