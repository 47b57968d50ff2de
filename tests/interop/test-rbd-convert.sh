#!/bin/bash
# SPDX-License-Identifier: MIT
# RBD as the disk (raw guest data in an RBD image) on a throwaway cluster:
# img convert local qcow2 -> rbd raw -> local raw is byte-identical; only
# allocated data reaches the cluster (img map and rbd diff show the holes);
# qemu-img reads what img wrote through QEMU's rbd driver and the reverse;
# a non-admin cephx user from the conf's keyring; img create -f raw, info,
# compare and convert -n on rbd: names; a snapshot opens read-only.
. "$(dirname "$0")/rbd-lib.sh"
rbd_cluster
M=1048576

qemu-img create -q -f qcow2 "$T/src.qcow2" 64M
qemu-io -c "write -P 0x11 0 1M" -c "write -P 0x22 $((20 * M + 512)) 3M" \
	-c "write -P 0x33 $((63 * M)) 1M" "$T/src.qcow2" >/dev/null
qemu-img convert -O raw "$T/src.qcow2" "$T/ref.raw"

ctx="convert qcow2 -> rbd raw -> raw"
must "$IMG" convert -O raw "$T/src.qcow2" rbd:$POOL/disk
[ "$(rbd_size disk)" = $((64 * M)) ] || fail "[$ctx] rbd size $(rbd_size disk)"
must "$IMG" convert -O raw rbd:$POOL/disk "$T/back.raw"
cmp "$T/ref.raw" "$T/back.raw" || fail "[$ctx] contents differ"
icompare "$T/src.qcow2" rbd:$POOL/disk
must "$IMG" info rbd:$POOL/disk
grep -q "file format: raw" "$T/.must" || fail "[$ctx] info: $(cat "$T/.must")"

ctx="a non-admin cephx user (profile rbd)"
must "$IMG" info rbd:$POOL/disk:id=test
expect_exit 1 "$IMG" info rbd:$POOL/disk:id=nobody
grep -q "cannot connect" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"

ctx="qemu-img reads img's rbd image"
must qemu-img compare -f qcow2 -F raw "$T/src.qcow2" rbd:$POOL/disk
must qemu-img convert -f raw -O raw rbd:$POOL/disk "$T/q.raw"
cmp "$T/ref.raw" "$T/q.raw" || fail "[$ctx] contents differ"

ctx="allocation"
# 4 MiB objects: data in objects 0, 5 and 15 only.
must "$IMG" map --output=json rbd:$POOL/disk
grep -c '"data": true' "$T/.must" >"$T/n"
grep '"data": true' "$T/.must" | sed 's/.*"start": \([0-9]*\), "length": \([0-9]*\).*/\1 \2/' >"$T/map"
printf '%s\n' "0 $((4 * M))" "$((20 * M)) $((4 * M))" "$((60 * M)) $((4 * M))" |
	cmp - "$T/map" || fail "[$ctx] img map: $(cat "$T/.must")"
timeout 30 rbd diff --format json disk >"$T/diff" || fail "[$ctx] rbd diff failed"
grep -o '"offset"' "$T/diff" | wc -l | grep -qx 3 || fail "[$ctx] rbd diff: $(cat "$T/diff")"
must "$IMG" info rbd:$POOL/disk
grep -q "disk size: 12 MiB" "$T/.must" || fail "[$ctx] info: $(cat "$T/.must")"

ctx="qemu-img writes, img reads"
must qemu-img convert -f qcow2 -O raw "$T/src.qcow2" rbd:$POOL/qdisk
icompare "$T/src.qcow2" rbd:$POOL/qdisk
must "$IMG" convert -f raw -O qcow2 rbd:$POOL/qdisk "$T/out.qcow2"
qcheck "$T/out.qcow2"
qcompare "$T/out.qcow2" "$T/ref.raw"

ctx="create, existing image, convert -n"
must "$IMG" create -f raw rbd:$POOL/new 8M
[ "$(rbd_size new)" = $((8 * M)) ] || fail "[$ctx] rbd size $(rbd_size new)"
expect_exit 1 "$IMG" create -f raw rbd:$POOL/new 8M
grep -q "exists" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"
qemu-img create -q -f raw "$T/small.raw" 8M
qemu-io -f raw -c "write -P 0x44 1M 64k" "$T/small.raw" >/dev/null
must "$IMG" convert -n -f raw -O raw "$T/small.raw" rbd:$POOL/new
icompare "$T/small.raw" rbd:$POOL/new

ctx="read-only snapshot"
timeout 30 rbd snap create disk@s1 >/dev/null 2>&1 || fail "[$ctx] rbd snap create"
qemu-io -f raw -c "write -P 0x55 0 1M" rbd:$POOL/disk >/dev/null || fail "[$ctx] qemu-io"
icompare "$T/ref.raw" rbd:$POOL/disk@s1
expect_exit 1 "$IMG" convert -n -f raw -O raw "$T/small.raw" rbd:$POOL/disk@s1
grep -q "read-only" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"
echo ok
