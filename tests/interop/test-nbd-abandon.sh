#!/bin/bash
# SPDX-License-Identifier: MIT
# Clients that queue many large reads and go away must not keep img-nbd busy
# or hold their connection slots. nbd-abandon.py opens N connections (the
# default cap of 100, all of them) that each queue 64 x 4 MiB NBD_CMD_READs
# without reading a reply, then close: first at once, then after holding the
# connections for 2 s (the server's replies back up meanwhile); a third round
# holds 64 x 64 KiB reads, which go to the I/O pool (its queue is what gets
# cancelled). After each round a new client (nbdinfo, then qemu-img info)
# must be served within 15 s (a liveness bound: the issue saw 77-83 s, on
# this machine img-nbd took 0.1-2.3 s but read all 25 GiB queued and peaked
# at 410 MiB; qemu-nbd 0.3-4 s), the server must not have read the abandoned
# data (rchar in /proc/PID/io, every read is one pread of the raw image: in
# the 4 MiB rounds less than two reads per client, 1/32 of the 25 GiB
# queued; in the 64 KiB round less than a quarter of the 400 MiB queued,
# where img-nbd read all of it before and half without the pool cancel; and
# after the clients of a held round closed, less than three per client),
# and
# its peak RSS (VmHWM) must stay under the server-wide buffer budget
# (128 MiB) plus 64 MiB for everything else (9-17 MiB in all after the
# rounds that close at once); while the connections were held, each of them
# used to hold a 4 MiB buffer.
. "$(dirname "$0")/nbd-lib.sh"
requires python3 nbdinfo
[ -r /proc/self/io ] || skip "no /proc/PID/io here"
N=${ABANDON_CLIENTS:-100}
MIB=1048576
LIVENESS=15
HWM_LIMIT_KB=$(((128 + 64) * 1024))

# Data everywhere, so no read is answered as a hole without reading.
qemu-io -f raw -c "write -P 0x5a 0 64M" "$T/d.raw" >/dev/null 2>&1 ||
	{ truncate -s 64M "$T/d.raw" && qemu-io -f raw -c "write -P 0x5a 0 64M" "$T/d.raw" >/dev/null; } ||
	fail "cannot write the test image"
PORT=$(free_port)
URI=nbd://127.0.0.1:$PORT
nbd_start a -t -b 127.0.0.1 -p "$PORT" -f raw "$T/d.raw"
PID=$(cat "$T/a.pid")

rchar() { awk '/^rchar:/ { print $2 }' "/proc/$PID/io"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$PID/status"; }

round() {
	local hold=$1 kib=$2 limit=$3 r0 t0 t1 last now served=0
	r0=$(rchar)
	timeout 120 python3 "$(dirname "$0")/nbd-abandon.py" 127.0.0.1 "$PORT" \
		"$N" "$hold" "$kib" "$PID" >"$T/py.log" 2>&1 ||
		{
			cat "$T/py.log" >&2
			fail "[hold $hold, $kib KiB reads] the abandoning clients failed"
		}
	t0=$(date +%s%N)
	while [ $(($(date +%s%N) - t0)) -lt $((LIVENESS * 1000000000)) ]; do
		if timeout 10 nbdinfo --size "$URI" >"$T/size" 2>/dev/null; then
			served=1
			break
		fi
		sleep 0.1
	done
	t1=$(date +%s%N)
	[ $served = 1 ] ||
		fail "[hold $hold, $kib KiB reads] no new client served within ${LIVENESS} s after $N clients abandoned their reads"
	[ "$(cat "$T/size")" = $((64 * MIB)) ] || fail "[hold $hold, $kib KiB reads] nbdinfo size: $(cat "$T/size")"
	echo "hold $hold, $kib KiB reads: a new client was served $(((t1 - t0) / 1000000)) ms after $N clients closed"
	must qemu-img info -f raw "$URI"
	grep -q "virtual size: 64 MiB" "$T/.must" || fail "[hold $hold, $kib KiB reads] qemu-img info: $(cat "$T/.must")"
	# Let work still running settle before reading the counter.
	last=$(rchar)
	for _ in $(seq 20); do
		sleep 0.5
		now=$(rchar)
		[ "$now" = "$last" ] && break
		last=$now
	done
	echo "hold $hold, $kib KiB reads: the server read $(((now - r0) / MIB)) MiB (clients queued $((N * 64 * kib / 1024)) MiB)"
	[ $((now - r0)) -lt "$limit" ] ||
		fail "[hold $hold, $kib KiB reads] the server read $(((now - r0) / MIB)) MiB for clients that were gone (limit $((limit / MIB)) MiB)"
	[ "$hold" = 0 ] && return
	# Once they close: a client that closed before any reply reached it
	# sent a FIN, not a reset, so its first reply after that still goes
	# out; the second fails and drops the rest. Three reads per client.
	r0=$(awk '/^rchar at close:/ { print $4 }' "$T/py.log")
	[ -n "$r0" ] || fail "no rchar at close: $(cat "$T/py.log")"
	echo "hold $hold, $kib KiB reads: $(((now - r0) / 1024)) KiB read after the clients closed"
	[ $((now - r0)) -lt $((N * 3 * kib * 1024)) ] ||
		fail "[hold $hold, $kib KiB reads] the server read $(((now - r0) / 1024)) KiB after the clients closed (limit $((N * 3 * kib)) KiB)"
}

round 0 4096 $((N * 2 * 4 * MIB))
round 2 4096 $((N * 2 * 4 * MIB))
round 2 64 $((N * 64 * 64 * 1024 / 4))
hwm=$(hwm_kb)
echo "peak RSS of img-nbd: $((hwm / 1024)) MiB"
# ASan's shadow memory and quarantine (256 MiB of freed blocks) swamp it.
if grep -qa __asan_init "$IMG_NBD"; then
	echo "(ASan build: the peak RSS limit is not checked)"
else
	[ "$hwm" -lt $HWM_LIMIT_KB ] ||
		fail "img-nbd peak RSS $((hwm / 1024)) MiB, limit $((HWM_LIMIT_KB / 1024)) MiB"
fi
# Still a working server for real I/O.
must qemu-io -f raw -c "read -P 0x5a 60M 4M" "$URI"
nbd_stop a
echo ok
