#!/bin/bash
# SPDX-License-Identifier: MIT
# raw images against qemu-img/qemu-io, both directions: img create (sizes that
# qemu rounds, each preallocation mode) gives the same file size and host
# allocation as qemu-img create; img io writes and zeroes leave a file
# byte-identical to what qemu-io makes with the same ops; img reads qemu-io's
# files exactly (convert + cmp, compare, io read -P, map); img resize grows
# and shrinks like qemu-img resize; img convert raw->raw keeps holes.
. "$(dirname "$0")/interop-lib.sh"
need_format raw

M=1048576
alloc() { echo $(($(stat -c %b "$1") * 512)); }

ctx="create"
echo "== $ctx"
for size in 0 1 1000 512 $((M + 1)) $((64 * M)); do
	for p in off falloc full; do
		ctx="create size=$size preallocation=$p"
		rm -f "$T/i.raw" "$T/q.raw"
		must "$IMG" create -q -f raw -o preallocation=$p "$T/i.raw" "$size"
		must qemu-img create -q -f raw -o preallocation=$p "$T/q.raw" "$size"
		si=$(stat -c %s "$T/i.raw")
		sq=$(stat -c %s "$T/q.raw")
		[ "$si" = "$sq" ] || fail "[$ctx] img made $si bytes, qemu-img $sq"
		ai=$(alloc "$T/i.raw")
		aq=$(alloc "$T/q.raw")
		[ "$ai" -le $((aq + 65536)) ] && [ "$ai" -ge $((aq - 65536)) ] ||
			fail "[$ctx] img allocated $ai bytes, qemu-img $aq"
		cmp "$T/i.raw" "$T/q.raw" || fail "[$ctx] contents differ"
	done
done

# img writes, qemu checks: the same ops through img io and qemu-io give
# byte-identical files (cluster size 4k just places the ops; raw has none).
size=$((64 * M))
ctx="img io vs qemu-io"
echo "== $ctx"
mapfile -t ops < <(ops_basic 4096 $((16 * M)) "$size" | grep -v '^discard')
ops+=("write -P 0x5c 12345 $((3 * M + 17))" "write -z -u $((5 * M)) $((2 * M + 4096))")
for f in i q; do ref_new "$T/$f.raw" "$size"; done
img_ops "$T/i.raw" raw "${ops[@]}"
qemu_ops "$T/q.raw" raw "${ops[@]}"
cmp "$T/i.raw" "$T/q.raw" || fail "[$ctx] files differ"
[ "$(stat -c %s "$T/i.raw")" = "$size" ] || fail "[$ctx] img io changed the file size"
# A discard leaves the size alone and qemu still reads the rest unchanged.
img_ops "$T/i.raw" raw "discard $((20 * M)) $M"
[ "$(stat -c %s "$T/i.raw")" = "$size" ] || fail "[$ctx] discard changed the file size"
qemu_ops "$T/i.raw" raw "read -P 0x11 0 3996" "read -P 0xee $((size - 777)) 777"

# qemu writes, img reads.
ctx="qemu-io writes, img reads"
echo "== $ctx"
mapfile -t ops < <(ops_basic 512 $((8 * M)) "$size" u)
ref_new "$T/q.raw" "$size"
qemu_ops "$T/q.raw" raw "${ops[@]}"
cp --sparse=always "$T/q.raw" "$T/exp.raw"
img_reads_same "$T/q.raw" "$T/exp.raw"
must "$IMG" io -f raw -c "read -P 0x22 412 101" -c "read -P 0 513 512" \
	-c "read -P 0xee $((size - 777)) 265" "$T/q.raw"
"$IMG" map --output=json -f raw "$T/q.raw" >"$T/img.map" 2>&1
qemu-img map --output=json -f raw "$T/q.raw" >"$T/qemu.map"
diff "$T/qemu.map" "$T/img.map" >"$T/.diff" || {
	head -n 20 "$T/.diff" >&2
	fail "[$ctx] img map --output=json differs from qemu-img map (<)"
}

# Holes survive img convert raw -> raw.
ctx="img convert raw -> raw"
echo "== $ctx"
rm -f "$T/c.raw"
must "$IMG" convert -f raw -O raw "$T/q.raw" "$T/c.raw"
cmp "$T/c.raw" "$T/q.raw" || fail "[$ctx] contents differ"
ac=$(alloc "$T/c.raw")
aq=$(alloc "$T/q.raw")
[ "$ac" -le $((aq + 4 * M)) ] || fail "[$ctx] the copy allocates $ac bytes, the source $aq"

# Resize like qemu-img resize.
for new in +1M $((80 * M + 512)) -3M $((32 * M)); do
	ctx="resize $new"
	echo "== $ctx"
	shrink=()
	case $new in -*) shrink=(--shrink) ;; *) [ "${new#+}" = "$new" ] && [ "$new" -lt "$(stat -c %s "$T/i.raw")" ] && shrink=(--shrink) ;; esac
	must "$IMG" resize -q -f raw "${shrink[@]}" "$T/i.raw" -- "$new"
	must qemu-img resize -q -f raw "${shrink[@]}" "$T/q.raw" -- "$new"
	[ "$(stat -c %s "$T/i.raw")" = "$(stat -c %s "$T/q.raw")" ] ||
		fail "[$ctx] img: $(stat -c %s "$T/i.raw") bytes, qemu-img: $(stat -c %s "$T/q.raw")"
done
echo "ok"
