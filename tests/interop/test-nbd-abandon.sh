#!/bin/bash
# SPDX-License-Identifier: MIT
# Clients that queue many large reads and go away must not keep img-nbd busy
# or hold their connection slots. nbd-abandon.py opens N connections (the
# default cap of 100, all of them) that each queue 64 x 4 MiB NBD_CMD_READs
# without reading a reply, then close: first at once, then after holding the
# connections for 2 s (the server's replies back up meanwhile). After each
# round a new client (nbdinfo, then qemu-img info) must be served within
# 15 s (a liveness bound: img-nbd took 77-83 s before, qemu-nbd about 1 s),
# the server must not have read the abandoned data (rchar in /proc/PID/io,
# every 4 MiB read is one pread of the raw image, must grow by less than two
# reads per client: 1/32 of the 25 GiB queued), and its peak RSS (VmHWM) must
# stay under the server-wide buffer budget (128 MiB) plus 64 MiB for
# everything else (about 15 MiB measured with 100 idle connections); while
# the connections are held, each of them used to hold a 4 MiB buffer.
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
	local hold=$1 r0 t0 t1 last now served=0
	r0=$(rchar)
	timeout 120 python3 "$(dirname "$0")/nbd-abandon.py" 127.0.0.1 "$PORT" \
		"$N" "$hold" >"$T/py.log" 2>&1 ||
		{
			cat "$T/py.log" >&2
			fail "[hold $hold] the abandoning clients failed"
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
		fail "[hold $hold] no new client served within ${LIVENESS} s after $N clients abandoned their reads"
	[ "$(cat "$T/size")" = $((64 * MIB)) ] || fail "[hold $hold] nbdinfo size: $(cat "$T/size")"
	echo "hold $hold: a new client was served $(((t1 - t0) / 1000000)) ms after $N clients closed"
	must qemu-img info -f raw "$URI"
	grep -q "virtual size: 64 MiB" "$T/.must" || fail "[hold $hold] qemu-img info: $(cat "$T/.must")"
	# Let work still running settle before reading the counter.
	last=$(rchar)
	for _ in $(seq 20); do
		sleep 0.5
		now=$(rchar)
		[ "$now" = "$last" ] && break
		last=$now
	done
	echo "hold $hold: the server read $(((now - r0) / MIB)) MiB (clients queued $((N * 64 * 4)) MiB)"
	[ $((now - r0)) -lt $((N * 2 * 4 * MIB)) ] ||
		fail "[hold $hold] the server read $(((now - r0) / MIB)) MiB for clients that were gone (limit $((N * 2 * 4)) MiB)"
}

round 0
round 2
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
