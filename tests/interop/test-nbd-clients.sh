#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd with real clients: qemu-img and qemu-io over nbd:// (TCP) and
# nbd+unix:// (info, read, write, map, convert both ways), nbdinfo (--list,
# --json, --map, --map=qemu:allocation-depth), nbdcopy in both directions
# with several connections (multi-conn), fio's nbd engine with a verify job.
# The served qcow2 must pass qemu-img check afterwards and hold exactly what
# the clients wrote (compared with a raw reference that got the same writes).
. "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo nbdcopy
M=1048576

qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
qemu-io -c "write -P 0x11 0 1M" "$T/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.qcow2" -F qcow2 "$T/a.qcow2"
qemu-io -c "write -P 0xab 2M 1M" -c "write -P 0xcd 10M 64k" \
	-c "write -z 20M 1M" "$T/a.qcow2" >/dev/null
qemu-img convert -O raw "$T/a.qcow2" "$T/ref.raw"

SOCK=$T/s.sock
PORT=$(free_port)
U="nbd+unix:///exp?socket=$SOCK"
nbd_start u -t -A -x exp -k "$SOCK" -f qcow2 "$T/a.qcow2"

ctx="qemu-img info/convert over unix"
must qemu-img info "$U"
grep -q "virtual size: 64 MiB" "$T/.must" || fail "[$ctx] size: $(cat "$T/.must")"
must qemu-img convert -f raw -O raw "$U" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] contents differ"

ctx="qemu-io reads"
must qemu-io -f raw -c "read -P 0x11 0 1M" -c "read -P 0xab 2M 1M" \
	-c "read -P 0xcd 10M 64k" -c "read -P 0 20M 1M" -c "read -P 0 63M 1M" "$U"

ctx="nbdinfo"
must nbdinfo --list "nbd+unix:///?socket=$SOCK"
grep -q 'export="exp"' "$T/.must" || fail "[$ctx] list: $(cat "$T/.must")"
must nbdinfo --json "$U"
grep -q '"export-size": 67108864' "$T/.must" || fail "[$ctx] json: $(cat "$T/.must")"
grep -q '"can_multi_conn": true' "$T/.must" || fail "[$ctx] multi-conn not advertised"
must nbdinfo --map "$U"
# base:allocation: the backing's 1M, our 2M..3M and 10M..10M+64k hold data.
awk '$4 == "data" { print $1, $2 }' "$T/.must" >"$T/map"
printf '%s\n' "0 1048576" "2097152 1048576" "10485760 65536" | cmp - "$T/map" ||
	fail "[$ctx] map: $(cat "$T/.must")"
must nbdinfo --map=qemu:allocation-depth "$U"
# depth 2 = backing, 1 = top layer (also the zeroed 20M cluster), 0 = absent.
awk '{ print $1, $2, $3 }' "$T/.must" >"$T/depth"
printf '%s\n' "0 1048576 2" "1048576 1048576 0" "2097152 1048576 1" \
	"3145728 7340032 0" "10485760 65536 1" "10551296 10420224 0" \
	"20971520 1048576 1" "22020096 45088768 0" | cmp - "$T/depth" ||
	fail "[$ctx] depth map: $(cat "$T/.must")"

ctx="qemu-img map over nbd"
must qemu-img map --output=json -f raw "$U"
grep -q '"start": 2097152, "length": 1048576, "depth": 0, "present": true, "zero": false, "data": true' "$T/.must" ||
	fail "[$ctx] $(cat "$T/.must")"

ctx="writes over TCP with qemu-io"
nbd_stop u
nbd_start t -t -A -b 127.0.0.1 -p "$PORT" -x exp -f qcow2 "$T/a.qcow2"
N="nbd://127.0.0.1:$PORT/exp"
must qemu-io -f raw -c "write -P 0x5a 5M 300k" -c "write -z 2M 4k" \
	-c "discard 30M 1M" -c "flush" -c "read -P 0x5a 5M 300k" "$N"
qemu-io -f raw -c "write -P 0x5a 5M 300k" -c "write -z 2M 4k" \
	-n "$T/ref.raw" >/dev/null
must qemu-img convert -f raw -O raw "$N" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] contents differ"

ctx="qemu-img convert into the export"
head -c $((8 * M)) /dev/urandom >"$T/rnd"
qemu-img convert -q -f raw -O raw "$T/rnd" -n "$T/rnd8.raw" 2>/dev/null || cp "$T/rnd" "$T/rnd8.raw"
truncate -s 64M "$T/rnd8.raw"
dd if="$T/rnd" of="$T/ref.raw" conv=notrunc bs=1M seek=40 status=none
qemu-img create -q -f raw "$T/rndsrc.raw" 64M
dd if="$T/ref.raw" of="$T/rndsrc.raw" conv=notrunc bs=1M status=none
must qemu-img convert -n -f raw -O raw "$T/rndsrc.raw" "$N"
must qemu-img convert -f raw -O raw "$N" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] contents differ"

ctx="nbdcopy both ways, multi-conn"
head -c $((64 * M)) /dev/urandom >"$T/big.raw"
dd if=/dev/zero of="$T/big.raw" bs=1M seek=16 count=8 conv=notrunc status=none
must nbdcopy --connections=4 --requests=16 "$T/big.raw" "$N"
must nbdcopy --connections=4 --requests=16 "$N" "$T/back.raw"
cmp "$T/big.raw" "$T/back.raw" || fail "[$ctx] contents differ"
cp "$T/big.raw" "$T/ref.raw"

ctx="fio nbd verify"
# Each block written once (fio's random map): NBD does not order requests in
# flight, so two overlapping writes at depth 16 may land in either order, and
# with --norandommap fio's verify then fails on a correct server (its HOWTO
# says so).
if command -v fio >/dev/null && fio --enghelp 2>/dev/null | grep -qw nbd; then
	must fio --name=v --ioengine=nbd --uri="$N" --rw=randwrite --bs=4k \
		--size=16M --offset=32M --iodepth=16 --verify=crc32c \
		--verify_fatal=1 --do_verify=1 --randrepeat=0 \
		--verify_state_save=0
	must qemu-img convert -f raw -O raw "$N" "$T/out.raw"
	cmp -n $((32 * M)) "$T/ref.raw" "$T/out.raw" ||
		fail "[$ctx] fio wrote outside its range"
	cp "$T/out.raw" "$T/ref.raw"
else
	echo "fio without the nbd engine: fio case skipped"
fi

ctx="stop and check"
nbd_stop t
qcheck "$T/a.qcow2"
must qemu-img compare -f qcow2 -F raw "$T/a.qcow2" "$T/ref.raw"
echo ok
