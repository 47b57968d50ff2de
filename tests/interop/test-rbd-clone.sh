#!/bin/bash
# SPDX-License-Identifier: MIT
# Backing chains <-> RBD clones on a throwaway cluster. A qcow2 base goes to
# an RBD image and a snapshot; img convert -B rbd:$POOL/base@SNAP -F raw of a
# qcow2 overlay (bigger than its base, with data and zero clusters) makes an
# RBD clone of that snapshot: rbd info shows the parent and the snapshot is
# protected, only the overlay's objects are written (rbd du), contents equal
# the overlay (qemu-img through its rbd driver). Back: without -B the clone
# is flattened; with -B base.qcow2 the qcow2 overlay holds only the clone's
# own objects and reads like the original overlay. Bad -B/-F are refused.
. "$(dirname "$0")/rbd-lib.sh"
rbd_cluster
M=1048576

qemu-img create -q -f qcow2 "$T/base.qcow2" 32M
qemu-io -c "write -P 0x11 0 8M" -c "write -P 0x12 $((16 * M)) 4M" "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/ov.qcow2" 40M
qemu-io -c "write -P 0x21 1M 64k" -c "write -z $((16 * M)) 1M" \
	-c "write -P 0x23 $((36 * M)) 1M" "$T/ov.qcow2" >/dev/null

ctx="qcow2 overlay -> rbd clone"
must "$IMG" convert -O raw "$T/base.qcow2" rbd:$POOL/base
must "$IMG" snapshot -c gold rbd:$POOL/base
must "$IMG" convert -O raw -B rbd:$POOL/base@gold -F raw "$T/ov.qcow2" rbd:$POOL/vm
timeout 30 rbd info vm >"$T/info" || fail "[$ctx] rbd info"
grep -q "parent: $POOL/base@gold" "$T/info" || fail "[$ctx] parent: $(cat "$T/info")"
grep -q "size 40 MiB" "$T/info" || fail "[$ctx] size: $(cat "$T/info")"
timeout 30 rbd snap ls base | grep -q "gold.*yes" || fail "[$ctx] snapshot not protected"
qcompare "$T/ov.qcow2" rbd:$POOL/vm -f qcow2 -F raw
icompare "$T/ov.qcow2" rbd:$POOL/vm
# Objects 0 (copy-up for the 64k write), 4 (zeroes over base data), 9.
timeout 30 rbd du vm 2>/dev/null | awk '$1 == "vm" { print $4, $5 }' | grep -qx "12 MiB" ||
	fail "[$ctx] rbd du: $(timeout 30 rbd du vm 2>&1)"

ctx="rbd clone -> flat qcow2"
must "$IMG" convert -O qcow2 rbd:$POOL/vm "$T/flat.qcow2"
qemu-img info "$T/flat.qcow2" | grep -q "backing file" && fail "[$ctx] has a backing file"
qcompare "$T/flat.qcow2" "$T/ov.qcow2"

ctx="rbd clone -> qcow2 overlay"
must "$IMG" convert -O qcow2 -B "$T/base.qcow2" -F qcow2 rbd:$POOL/vm "$T/ov2.qcow2"
qcheck "$T/ov2.qcow2"
qcompare "$T/ov2.qcow2" "$T/ov.qcow2"
# Only the clone's own objects: 0-4M, 16-20M, 36-40M (the tail past the
# base reads as zeroes, written as such).
qemu-img map --output=json "$T/ov2.qcow2" |
	awk -F'[:,]' '/"depth": 0/ && /"present": true/ { s += $4 } END { print s }' |
	grep -qx $((12 * M)) || fail "[$ctx] map: $(qemu-img map --output=json "$T/ov2.qcow2")"

ctx="refusals"
expect_exit 1 "$IMG" convert -O raw -B rbd:$POOL/base -F raw "$T/ov.qcow2" rbd:$POOL/vm2
grep -q "must name a snapshot" "$T/.err" || fail "[$ctx] $(cat "$T/.err")"
expect_exit 1 "$IMG" convert -O raw -B rbd:$POOL/base@gold -F qcow2 "$T/ov.qcow2" rbd:$POOL/vm2
grep -q "raw" "$T/.err" || fail "[$ctx] $(cat "$T/.err")"
expect_exit 1 "$IMG" convert -O raw -B rbd:$POOL/base@nosuch -F raw "$T/ov.qcow2" rbd:$POOL/vm2
expect_exit 1 "$IMG" convert -O raw -B rbd:$POOL/base@gold -F raw "$T/ov.qcow2" rbd:$POOL/vm
grep -q "exists" "$T/.err" || fail "[$ctx] $(cat "$T/.err")"
expect_exit 1 "$IMG" snapshot -d gold rbd:$POOL/base
grep -q "has clones" "$T/.err" || fail "[$ctx] $(cat "$T/.err")"
echo ok
