#!/bin/bash
# SPDX-License-Identifier: MIT
# img amend against qemu-img amend: refcount_bits through every width (on an
# image with an internal snapshot, whose shared clusters refuse 1-bit
# refcounts as in qemu-img), compat 1.1 -> 0.10 with zero clusters (with and
# without a backing file, shared with a snapshot) and back, lazy_refcounts, data_file settings and
# size; each result passes qemu-img check, reads as before, and shows the
# same settings as qemu-img's amend of a copy. Refusals (exit 1) are the same
# as qemu-img's. qemu-img amends images img made and img reads them.
. "$(dirname "$0")/interop-lib.sh"
need_format qcow2

M=1048576

# field JSONFILE KEY: a value from saved qemu-img info --output=json.
field() {
	sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" "$1" |
		head -n 1
}

info() {
	qemu-img info --output=json "$1" >"$1.json" || fail "[$ctx] info $1"
	echo "$1.json"
}

# make FILE OPTS [BACKING]: an image with data, zero clusters, a discard.
make() {
	local f=$1 opts=$2 b=${3:-} args=()
	[ -n "$b" ] && args=(-b "$b" -F qcow2)
	must qemu-img create -q -f qcow2 -o "$opts" "${args[@]}" "$f" 8M
	qemu_ops "$f" qcow2 "write -P 0x21 0 1M" "write -z 256k 128k" \
		"write -z $((2 * M)) 1M" "write -P 0x22 $((5 * M + 3)) 70k" \
		"discard $((5 * M)) 64k" "write -P 0x23 $((8 * M - 4096)) 4096"
}

# amend_vs_qemu OPTS FILE: img amends FILE, qemu-img a copy; same outcome.
amend_vs_qemu() {
	local opts=$1 f=$2 rc_i rc_q k
	cp "$f" "$f.q"
	[ -f "$f.raw" ] || qemu_export "$f" "$f.raw"
	"$IMG" amend -o "$opts" "$f" >"$T/.i" 2>&1
	rc_i=$?
	qemu-img amend -o "$opts" "$f.q" >"$T/.q" 2>&1
	rc_q=$?
	[ $rc_i = $rc_q ] || {
		cat "$T/.i" "$T/.q" >&2
		fail "[$ctx] amend -o $opts: img exit $rc_i, qemu-img exit $rc_q"
	}
	qcheck "$f"
	qcompare "$f" "$f.raw"
	qcompare "$f" "$f.q"
	info "$f" >/dev/null
	info "$f.q" >/dev/null
	for k in compat refcount-bits lazy-refcounts data-file data-file-raw \
		virtual-size; do
		[ "$(field "$f.json" $k)" = "$(field "$f.q.json" $k)" ] ||
			fail "[$ctx] amend -o $opts: $k is '$(field "$f.json" $k)', qemu-img made '$(field "$f.q.json" $k)'"
	done
	rm -f "$f.q" "$f.q.json"
}

refcount_widths() {
	ctx="refcount_bits"
	make "$T/r.qcow2" cluster_size=4k
	must qemu-img snapshot -c snap "$T/r.qcow2"
	qemu_export "$T/r.qcow2" "$T/snap.raw"
	qemu_ops "$T/r.qcow2" qcow2 "write -P 0x24 1M 64k"
	rm -f "$T/r.qcow2.raw"
	for w in 1 2 4 8 32 64 16 2 64; do
		amend_vs_qemu refcount_bits=$w "$T/r.qcow2"
	done
	[ "$(field "$(info "$T/r.qcow2")" refcount-bits)" = 64 ] || fail "[$ctx] final width"
	must qemu-img snapshot -a snap "$T/r.qcow2"
	qcompare "$T/r.qcow2" "$T/snap.raw"
	qcheck "$T/r.qcow2"
	rm -f "$T"/r.qcow2*
}

downgrade_upgrade() {
	local b
	for b in "" base; do
		ctx="compat=0.10 ${b:+with backing}"
		rm -f "$T"/d.qcow2* "$T/base.qcow2"
		if [ -n "$b" ]; then
			must qemu-img create -q -f qcow2 "$T/base.qcow2" 8M
			qemu_ops "$T/base.qcow2" qcow2 "write -P 0x11 0 8M"
		fi
		make "$T/d.qcow2" cluster_size=64k ${b:+"$T/base.qcow2"}
		# A snapshot shares the zero clusters the downgrade expands.
		must qemu-img snapshot -c s "$T/d.qcow2"
		qemu_ops "$T/d.qcow2" qcow2 "write -z $((6 * M)) 64k"
		amend_vs_qemu compat=0.10 "$T/d.qcow2"
		must qemu-img snapshot -a s "$T/d.qcow2"
		qcheck "$T/d.qcow2"
		must qemu-img snapshot -d s "$T/d.qcow2"
		qemu_ops "$T/d.qcow2" qcow2 "write -z $((6 * M)) 64k"
		qcompare "$T/d.qcow2" "$T/d.qcow2.raw"
		[ "$(field "$(info "$T/d.qcow2")" compat)" = 0.10 ] || fail "[$ctx] compat"
		img_reads_same "$T/d.qcow2" "$T/d.qcow2.raw"
		ctx="compat=1.1 ${b:+with backing}"
		amend_vs_qemu compat=1.1,lazy_refcounts=on "$T/d.qcow2"
		amend_vs_qemu lazy_refcounts=off "$T/d.qcow2"
	done
	rm -f "$T"/d.qcow2* "$T/base.qcow2"
}

# Both refuse (exit 1) and img leaves the file as it was.
refuse_as_qemu() {
	local opts=$1 f=$2
	cp "$f" "$f.orig"
	cp "$f" "$f.q"
	expect_exit 1 "$IMG" amend -o "$opts" "$f"
	expect_exit 1 qemu-img amend -o "$opts" "$f.q"
	cmp -s "$f" "$f.orig" || fail "[$ctx] refused amend -o $opts changed $f"
	rm -f "$f.orig" "$f.q"
}

refusals() {
	local o
	ctx="refusals"
	make "$T/x.qcow2" cluster_size=64k,extended_l2=on
	make "$T/y.qcow2" cluster_size=64k,refcount_bits=8
	for o in compat=0.10 compat=0.9 refcount_bits=3 cluster_size=4k \
		foo=bar data_file=x data_file_raw=on "lazy_refcounts=on,compat=0.10" \
		"compat=0.10,refcount_bits=32"; do
		refuse_as_qemu "$o" "$T/x.qcow2"
		refuse_as_qemu "$o" "$T/y.qcow2"
	done
	qcheck "$T/x.qcow2"
	qcheck "$T/y.qcow2"
	rm -f "$T"/x.qcow2* "$T"/y.qcow2*
}

data_file() {
	ctx="data_file"
	# qemu-img opens a renamed data file relative to the working directory.
	cd "$T" || exit 1
	must qemu-img create -q -f qcow2 \
		-o data_file=data.raw,data_file_raw=on e.qcow2 4M
	qemu_ops e.qcow2 qcow2 "write -P 0x31 0 1M"
	cp data.raw moved.raw
	amend_vs_qemu data_file_raw=off e.qcow2
	amend_vs_qemu data_file=moved.raw e.qcow2
	[ "$(field "$(info e.qcow2)" data-file)" = moved.raw ] || fail "[$ctx] name"
	amend_vs_qemu compat=0.10 e.qcow2
	rm -f e.qcow2* ./*.raw
}

sizes() {
	ctx="size"
	make "$T/s.qcow2" cluster_size=64k
	amend_vs_qemu size=16M "$T/s.qcow2"
	rm -f "$T/s.qcow2.raw"
	amend_vs_qemu size=8M "$T/s.qcow2"
	rm -f "$T"/s.qcow2*
}

qemu_amends_img_image() {
	ctx="qemu-img amend of img images"
	must "$IMG" create -q -f qcow2 -o cluster_size=4k,refcount_bits=1 \
		"$T/g.qcow2" 8M
	img_ops "$T/g.qcow2" qcow2 "write -P 0x41 0 3M" "write -z 1M 1M"
	must "$IMG" amend -o refcount_bits=16,compat=0.10 "$T/g.qcow2"
	qemu_export "$T/g.qcow2" "$T/g.raw"
	must qemu-img amend -o compat=1.1,refcount_bits=4 "$T/g.qcow2"
	icheck "$T/g.qcow2"
	img_reads_same "$T/g.qcow2" "$T/g.raw"
	must "$IMG" amend -o refcount_bits=32,lazy_refcounts=on "$T/g.qcow2"
	qcheck "$T/g.qcow2"
	qcompare "$T/g.qcow2" "$T/g.raw"
	rm -f "$T"/g.*
}

tcase refcount_widths
tcase downgrade_upgrade
tcase refusals
tcase data_file
tcase sizes
tcase qemu_amends_img_image
finish
