#!/bin/bash
# SPDX-License-Identifier: MIT
# Internal snapshots <-> RBD snapshots on a throwaway cluster. img convert
# --snapshots of a qcow2 (snapshots made by qemu-img, one at another disk
# size) to rbd:: one RBD snapshot per internal one, same names, oldest first,
# each holding that snapshot's contents (read back by rbd export and by
# qemu-img's rbd driver at @SNAP), only changed data written per snapshot
# (rbd diff --from-snap); back to qcow2 with --snapshots: the same snapshots
# (qemu-img -l), contents identical, unchanged clusters shared (no bigger
# than the source). img snapshot -l/-c/-a/-d/--diff on an rbd: name; img-nbd
# serves the RBD snapshots as NAME@SNAP exports.
. "$(dirname "$0")/rbd-lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo
rbd_cluster
M=1048576

qemu-img create -q -f qcow2 "$T/src.qcow2" 32M
qemu-io -c "write -P 0x11 0 1M" -c "write -P 0x22 $((8 * M)) 2M" "$T/src.qcow2" >/dev/null
qemu-img snapshot -c one "$T/src.qcow2"
qemu-io -c "write -P 0x33 512k 64k" -c "write -z $((8 * M)) 1M" "$T/src.qcow2" >/dev/null
qemu-img snapshot -c two "$T/src.qcow2"
qemu-img resize -q "$T/src.qcow2" 40M
qemu-io -c "write -P 0x44 $((36 * M)) 1M" "$T/src.qcow2" >/dev/null
qemu-img snapshot -c three "$T/src.qcow2"
qemu-io -c "write -P 0x55 $((20 * M)) 1M" "$T/src.qcow2" >/dev/null
# qemu-img convert -l writes the current size; a snapshot has its own.
for s in one two three; do
	qemu-img convert -O raw -l "snapshot.name=$s" "$T/src.qcow2" "$T/ref-$s.raw"
done
truncate -s 32M "$T/ref-one.raw" "$T/ref-two.raw"
qemu-img convert -O raw "$T/src.qcow2" "$T/ref-live.raw"

ctx="qcow2 -> rbd with --snapshots"
must "$IMG" convert --snapshots -O raw "$T/src.qcow2" rbd:$POOL/disk
timeout 30 rbd snap ls --format json disk >"$T/snaps" || fail "[$ctx] rbd snap ls"
sed 's/"name":"\([^"]*\)"/\n\1\n/g' "$T/snaps" | grep -x 'one\|two\|three' | tr '\n' ' ' |
	grep -qx 'one two three ' || fail "[$ctx] snapshots: $(cat "$T/snaps")"
for s in one two three; do
	timeout 30 rbd export --no-progress "disk@$s" "$T/exp-$s.raw" || fail "[$ctx] rbd export $s"
	cmp "$T/ref-$s.raw" "$T/exp-$s.raw" || fail "[$ctx] snapshot $s differs (rbd export)"
	qcompare "$T/ref-$s.raw" "rbd:$POOL/disk@$s" -f raw -F raw
done
[ "$(stat -c %s "$T/exp-one.raw")" = $((32 * M)) ] || fail "[$ctx] size of one"
[ "$(stat -c %s "$T/exp-three.raw")" = $((40 * M)) ] || fail "[$ctx] size of three"
qcompare "$T/ref-live.raw" rbd:$POOL/disk -f raw -F raw
# Only the changes reach each snapshot: two differs from one by 64k + 1M.
timeout 30 rbd diff --from-snap one --format json disk@two >"$T/diff" || fail "[$ctx] rbd diff"
grep -o '"offset":[0-9]*' "$T/diff" | tr '\n' ' ' |
	grep -qx "\"offset\":524288 \"offset\":$((8 * M)) " || fail "[$ctx] diff one..two: $(cat "$T/diff")"

ctx="img snapshot on rbd:"
must "$IMG" snapshot -l rbd:$POOL/disk
grep -c '^[0-9]' "$T/.must" | grep -qx 3 || fail "[$ctx] list: $(cat "$T/.must")"
must "$IMG" info --output=json rbd:$POOL/disk
grep -q '"name": "three"' "$T/.must" || fail "[$ctx] info: $(cat "$T/.must")"

ctx="rbd -> qcow2 with --snapshots"
# A snapshot made by the rbd tool, not by img.
qemu-io -f raw -c "write -P 0x66 $((24 * M)) 4k" rbd:$POOL/disk >/dev/null || fail "[$ctx] qemu-io"
timeout 30 rbd snap create disk@four >/dev/null 2>&1 || fail "[$ctx] rbd snap create"
cp "$T/ref-live.raw" "$T/ref-four.raw"
qemu-io -f raw -c "write -P 0x66 $((24 * M)) 4k" "$T/ref-four.raw" >/dev/null
must "$IMG" convert --snapshots -O qcow2 rbd:$POOL/disk "$T/back.qcow2"
qcheck "$T/back.qcow2"
# Snapshot one keeps its disk size (qemu-img info shows none: apply it).
cp "$T/back.qcow2" "$T/applied.qcow2"
qemu-img snapshot -a one "$T/applied.qcow2" || fail "[$ctx] qemu-img snapshot -a"
qemu-img info "$T/applied.qcow2" | grep -q "virtual size: 32 MiB" ||
	fail "[$ctx] size of one: $(qemu-img info "$T/applied.qcow2")"
qemu-img snapshot -l "$T/back.qcow2" | awk 'NR > 2 { print $2 }' | tr '\n' ' ' |
	grep -qx 'one two three four ' || fail "[$ctx] $(qemu-img snapshot -l "$T/back.qcow2")"
for s in one two three four; do
	qemu-img convert -O raw -l "snapshot.name=$s" "$T/back.qcow2" "$T/b-$s.raw"
	cmp -n "$(stat -c %s "$T/ref-$s.raw")" "$T/ref-$s.raw" "$T/b-$s.raw" ||
		fail "[$ctx] snapshot $s differs"
done
qcompare "$T/ref-four.raw" "$T/back.qcow2"
# Shared clusters: about the source plus the 4k of four (a cluster, its L2
# table copy, a refcount block and a table entry), not a copy per snapshot.
[ "$(stat -c %s "$T/back.qcow2")" -le $(($(stat -c %s "$T/src.qcow2") + 256 * 1024)) ] ||
	fail "[$ctx] back.qcow2 is $(stat -c %s "$T/back.qcow2") bytes, src $(stat -c %s "$T/src.qcow2")"

ctx="img snapshot --diff on rbd:"
must "$IMG" snapshot --diff one two rbd:$POOL/disk
awk 'NR > 1 { print $1, $2 }' "$T/.must" | tr '\n' ' ' | grep -qx "0x80000 0x10000 0x800000 0x100000 " ||
	fail "[$ctx] $(cat "$T/.must")"
# By id, against the live image.
id=$(sed -n 's/.*"id":\([0-9]*\),"name":"one".*/\1/p' "$T/snaps")
must "$IMG" snapshot --diff "$id" rbd:$POOL/disk
grep -q "^0x80000 " "$T/.must" || fail "[$ctx] id $id: $(cat "$T/.must")"
expect_exit 1 "$IMG" snapshot --diff nosuch rbd:$POOL/disk

ctx="img-nbd --snapshot-exports on rbd:"
nbd_start s -t -k "$T/s.sock" -x disk --snapshot-exports -f raw rbd:$POOL/disk
nbdinfo --list "nbd+unix:///?socket=$T/s.sock" >"$T/list" || fail "[$ctx] list"
grep -q 'export="disk@three"' "$T/list" || fail "[$ctx] no disk@three in $(cat "$T/list")"
must qemu-img convert -f raw -O raw "nbd+unix:///disk@two?socket=$T/s.sock" "$T/n-two.raw"
cmp "$T/ref-two.raw" "$T/n-two.raw" || fail "[$ctx] disk@two differs"
nbd_stop s

ctx="img snapshot -c/-a/-d on rbd:"
must "$IMG" snapshot -c five rbd:$POOL/disk
timeout 30 rbd snap ls disk | grep -qw five || fail "[$ctx] -c"
must "$IMG" snapshot -a one rbd:$POOL/disk
timeout 30 rbd export --no-progress disk "$T/rolled.raw" >/dev/null || fail "[$ctx] export"
cmp "$T/ref-one.raw" "$T/rolled.raw" || fail "[$ctx] -a one"
must "$IMG" snapshot -d two rbd:$POOL/disk
timeout 30 rbd snap ls disk | grep -qw two && fail "[$ctx] -d two left it"
expect_exit 1 "$IMG" snapshot -a nosuch rbd:$POOL/disk
expect_exit 1 "$IMG" snapshot -c "a@b" rbd:$POOL/disk
echo ok
