#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd serving an RBD image (raw guest data) from a throwaway cluster to
# qemu-img, qemu-io and nbdinfo: size, reads, block status (the RBD holes),
# writes that land in the RBD image (checked with qemu-img's rbd driver);
# block status follows the server's own writes and, within a second, those
# of another client.
. "$(dirname "$0")/rbd-lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo
rbd_cluster
M=1048576

qemu-img create -q -f raw "$T/ref.raw" 32M
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 $((20 * M)) 1M" \
	"$T/ref.raw" >/dev/null
must "$IMG" convert -f raw -O raw "$T/ref.raw" rbd:$POOL/disk

SOCK=$T/s.sock
U="nbd+unix:///exp?socket=$SOCK"
nbd_start s -t -x exp -k "$SOCK" -f raw rbd:$POOL/disk

ctx="qemu-img reads over nbd"
must qemu-img info "$U"
grep -q "virtual size: 32 MiB" "$T/.must" || fail "[$ctx] size: $(cat "$T/.must")"
must qemu-img convert -f raw -O raw "$U" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] contents differ"

ctx="nbdinfo map"
must nbdinfo --map "$U"
awk '$4 == "data" { print $1, $2 }' "$T/.must" >"$T/map"
printf '%s\n' "0 $((4 * M))" "$((20 * M)) $((4 * M))" | cmp - "$T/map" ||
	fail "[$ctx] map: $(cat "$T/.must")"

ctx="writes over nbd reach the rbd image"
must qemu-io -f raw -c "write -P 0x33 $((8 * M)) 1M" -c "write -z 0 64k" "$U"
# The cached allocation map follows the server's own writes.
must nbdinfo --map "$U"
awk '$4 == "data" { print $1, $2 }' "$T/.must" >"$T/map"
printf '%s\n' "0 $((4 * M))" "$((8 * M)) $((4 * M))" "$((20 * M)) $((4 * M))" |
	cmp - "$T/map" || fail "[$ctx] map after writes: $(cat "$T/.must")"
nbd_stop s
qemu-io -f raw -c "write -P 0x33 $((8 * M)) 1M" -c "write -z 0 64k" "$T/ref.raw" >/dev/null
must qemu-img compare -f raw -F raw rbd:$POOL/disk "$T/ref.raw"

ctx="another client's writes show in block status"
nbd_start r -t -r -x exp -k "$SOCK" -f raw rbd:$POOL/disk
must nbdinfo --map "$U"
must qemu-io -f raw -c "write -P 0x44 $((28 * M)) 4k" rbd:$POOL/disk
# The map of a read-only view of a live image is rebuilt after 1 s.
sleep 1.5
must nbdinfo --map "$U"
awk '$4 == "data" { print $1, $2 }' "$T/.must" | tail -n 1 | grep -qx "$((28 * M)) $((4 * M))" ||
	fail "[$ctx] map: $(cat "$T/.must")"
nbd_stop r
echo ok
