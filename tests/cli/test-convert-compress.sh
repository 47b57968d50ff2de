#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert -c: refused (exit 1, qemu-img's messages) for formats without
# compression and together with encryption, bad compression_level refused;
# zero clusters stay unallocated, -S 0 compresses them too, a cluster that
# does not shrink is stored uncompressed, an image size that is not a
# multiple of the cluster size and sources whose boundaries split clusters
# still convert exactly, -n into an existing image works, and -p prints the
# compression ratio.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

err() {
	local want=$1
	shift
	expect_exit 1 "$IMG" convert "$@"
	grep -q "^img: .*$want" "$T/.err" || { cat "$T/.err"; fail "convert $*: no '$want'"; }
}

K=1024
{
	head -c $((64 * K)) /dev/zero
	yes "some text that compresses well" | head -c $((192 * K))
	head -c $((64 * K)) /dev/urandom
	head -c $((64 * K)) /dev/zero
	yes "more text" | head -c $((100 * K + 3))
} >src.raw
SIZE=$(stat -c %s src.raw)

err "Compression not supported for this file format" -c -O raw src.raw out.raw
err "Compression and encryption not supported at the same time" \
	-c -O qcow2 -o encrypt.format=luks src.raw out.qcow2
err "compression_level" -c -O qcow2 -o compression_level=x src.raw out.qcow2
err "compression_level" -c -O qcow2 -o compression_type=zstd,compression_level=23 src.raw out.qcow2
err "invalid deflate level" -c -O qcow2 -o compression_level=13 src.raw out.qcow2

# Defaults: zero clusters unallocated, random cluster stored as is.
expect_exit 0 "$IMG" convert -c -O qcow2 src.raw a.qcow2
qemu-img check a.qcow2 >check.txt || { cat check.txt; fail "qemu-img check a.qcow2"; }
qemu-img compare -q src.raw a.qcow2 || fail "a.qcow2 differs from the source"
qemu-img map --output=json a.qcow2 >map.json
grep -q '"start": 0, "length": 65536, .*"data": false' map.json ||
	{ cat map.json; fail "the zero cluster was allocated"; }
# The random cluster: plain data with a host offset.
grep -q '"start": 262144, "length": 65536, .*"data": true, "offset"' map.json ||
	{ cat map.json; fail "the incompressible cluster is not stored uncompressed"; }
grep -q "compressed clusters" check.txt || fail "no compressed clusters"

# -S 0: every cluster written, the zero ones compressed too.
expect_exit 0 "$IMG" convert -c -S 0 -O qcow2 -o compression_type=zstd src.raw s0.qcow2
qemu-img compare -q src.raw s0.qcow2 || fail "s0.qcow2 differs"
qemu-img map --output=json s0.qcow2 | grep -q '"data": false' &&
	fail "-S 0 left a cluster unallocated"

# Sources that split clusters (33 KiB + the rest): stored uncompressed
# where a cluster is cut, still exact.
head -c $((33 * K)) src.raw >p1.raw
tail -c +$((33 * K + 1)) src.raw >p2.raw
expect_exit 0 "$IMG" convert -c -O qcow2 p1.raw p2.raw cat.qcow2
qemu-img check -q cat.qcow2 || fail "qemu-img check cat.qcow2"
qemu-img compare -q src.raw cat.qcow2 || fail "cat.qcow2 differs"

# -n into an existing image with data where the source has zeroes.
qemu-img create -q -f qcow2 -o compression_type=zstd n.qcow2 $(((SIZE + 511) / 512 * 512))
qemu-io -c "write -P 0xaa 0 256k" n.qcow2 >/dev/null || fail "qemu-io"
expect_exit 0 "$IMG" convert -c -n -O qcow2 src.raw n.qcow2
qemu-img check -q n.qcow2 || fail "qemu-img check n.qcow2"
qemu-img compare -q src.raw n.qcow2 || fail "n.qcow2 differs"

# -p: percentage and ratio.
expect_exit 0 "$IMG" convert -c -p -O qcow2 src.raw p.qcow2
grep -q "compressed to [0-9.]*%" "$T/.out" || { cat "$T/.out"; fail "-p shows no ratio"; }
grep -q "100.00/100%" "$T/.out" || { cat "$T/.out"; fail "-p did not reach 100%"; }
echo ok
