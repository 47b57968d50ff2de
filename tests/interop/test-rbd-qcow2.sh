#!/bin/bash
# SPDX-License-Identifier: MIT
# A qcow2 stored inside an RBD image, on a throwaway cluster: img writes it
# (convert, create + io writes that grow the RBD image) and qemu-img reads
# and checks it through QEMU's rbd driver; qemu-img writes one and img reads
# and checks it. The RBD image ends at the qcow2's end (growth given back).
. "$(dirname "$0")/rbd-lib.sh"
rbd_cluster
M=1048576

qemu-img create -q -f raw "$T/ref.raw" 32M
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 $((9 * M + 512)) 3M" \
	"$T/ref.raw" >/dev/null

ctx="img convert -O qcow2 into rbd, qemu-img reads"
must "$IMG" convert -f raw -O qcow2 "$T/ref.raw" rbd:$POOL/q1
must qemu-img check -f qcow2 rbd:$POOL/q1
must qemu-img compare -f qcow2 -F raw rbd:$POOL/q1 "$T/ref.raw"
icheck rbd:$POOL/q1
must "$IMG" info rbd:$POOL/q1
grep -q "file format: qcow2" "$T/.must" || fail "[$ctx] info: $(cat "$T/.must")"

ctx="img create + io writes grow the rbd image"
must "$IMG" create -f qcow2 rbd:$POOL/q2 1G
img_ops rbd:$POOL/q2 qcow2 "write -P 0x33 0 8M" "write -P 0x44 $((700 * M)) 5M"
must qemu-img check -f qcow2 rbd:$POOL/q2
end=$(sed -n 's/^Image end offset: //p' "$T/.must")
[ "$(rbd_size q2)" = "$end" ] || fail "[$ctx] rbd size $(rbd_size q2), qcow2 end $end"
must qemu-io -f qcow2 -c "read -P 0x33 0 8M" -c "read -P 0x44 $((700 * M)) 5M" \
	-c "read -P 0 $((8 * M)) 1M" rbd:$POOL/q2

ctx="qemu-img writes qcow2 into rbd, img reads"
must qemu-img create -f qcow2 rbd:$POOL/q3 32M
must qemu-io -f qcow2 -c "write -P 0x11 0 1M" -c "write -P 0x22 $((9 * M + 512)) 3M" rbd:$POOL/q3
icheck rbd:$POOL/q3
icompare rbd:$POOL/q3 "$T/ref.raw"
must "$IMG" convert -O raw rbd:$POOL/q3 "$T/back.raw"
cmp "$T/ref.raw" "$T/back.raw" || fail "[$ctx] contents differ"
echo ok
