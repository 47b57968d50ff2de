#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd serving an RBD image (raw guest data, throwaway cluster) over TLS
# (x509, client certificates verified) to several clients at once: qemu-img
# reads it and its block status, nbdinfo sees multi-conn offered, nbdcopy
# writes and reads it over 4 connections; the data lands in the RBD image
# (read back through qemu-img's rbd driver and rbd export). A plaintext
# client is refused.
. "$(dirname "$0")/rbd-lib.sh"
. "$(dirname "$0")/nbd-lib.sh"
requires openssl nbdinfo nbdcopy
rbd_cluster
M=1048576

P=$T/pki
nbd_make_pki "$P"
qemu-img create -q -f raw "$T/ref.raw" 32M
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 $((20 * M)) 1M" \
	"$T/ref.raw" >/dev/null
must "$IMG" convert -f raw -O raw "$T/ref.raw" rbd:$POOL/disk

PORT=$(free_port)
nbd_start s -t -x e -b 127.0.0.1 -p "$PORT" \
	--object "tls-creds-x509,id=t0,dir=$P/srv,endpoint=server,verify-peer=on" \
	--tls-creds t0 -f raw rbd:$POOL/disk
OBJ="tls-creds-x509,id=c0,dir=$P/cli,endpoint=client"
OPTS="driver=nbd,host=127.0.0.1,port=$PORT,export=e,tls-creds=c0"
U="nbds://127.0.0.1:$PORT/e?tls-certificates=$P/cli"

ctx="qemu-img over TLS"
must timeout 30 qemu-img convert -O raw --object "$OBJ" --image-opts "$OPTS" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] contents differ"
must timeout 30 qemu-img map --output=json --object "$OBJ" --image-opts "$OPTS"
grep '"data": true' "$T/.must" | sed 's/.*"start": \([0-9]*\), "length": \([0-9]*\).*/\1 \2/' >"$T/map"
printf '%s\n' "0 $((4 * M))" "$((20 * M)) $((4 * M))" | cmp - "$T/map" ||
	fail "[$ctx] map: $(cat "$T/.must")"
timeout 20 qemu-io -f raw -c "read 0 4k" "nbd://127.0.0.1:$PORT/e" >"$T/o" 2>&1 &&
	fail "[$ctx] a plaintext client got in"

ctx="nbdcopy over 4 TLS connections"
must timeout 20 nbdinfo --can multi-conn "$U"
head -c $((32 * M)) /dev/urandom >"$T/new.raw"
# Holes too: nbdcopy writes zeroes there.
dd if=/dev/zero of="$T/new.raw" bs=1M seek=8 count=8 conv=notrunc status=none
# -T 4: nbdcopy uses no more connections than threads.
timeout 60 nbdcopy -v -C 4 -T 4 --flush "$T/new.raw" "$U" 2>"$T/v" ||
	fail "[$ctx] nbdcopy write: $(grep -v 'debug:' "$T/v")"
grep -q "connections=4" "$T/v" || fail "[$ctx] $(grep -v 'debug:' "$T/v")"
grep -o 'dst[0-9]*: nbd_connect_uri: enter' "$T/v" | sort -u | wc -l | grep -qx 4 ||
	fail "[$ctx] not 4 connections: $(grep 'nbd_connect_uri: enter' "$T/v")"
must timeout 60 nbdcopy -C 4 -T 4 "$U" "$T/copy.raw"
cmp "$T/new.raw" "$T/copy.raw" || fail "[$ctx] read back differs"
nbd_stop s

ctx="the data is in the rbd image"
must qemu-img compare -f raw -F raw rbd:$POOL/disk "$T/new.raw"
timeout 30 rbd export --no-progress disk "$T/exp.raw" >/dev/null || fail "[$ctx] rbd export"
cmp "$T/new.raw" "$T/exp.raw" || fail "[$ctx] rbd export differs"
echo ok
