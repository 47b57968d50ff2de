#!/bin/bash
# SPDX-License-Identifier: MIT
# Clients that queue many writes to the same unallocated qcow2 clusters and
# go away abruptly. 8 connections each pipeline 96 NBD_CMD_WRITEs of 8 KiB:
# client i writes the i-th eighth of clusters 0..95 (64 KiB clusters), so
# all of them allocate the same clusters at once. Each client reads the
# replies of a random number of its first writes, then closes: even ones
# with a reset (SO_LINGER 0), odd ones with a FIN, the rest of their writes
# still queued or unread. Then a new client must be served (a write and a
# read back with qemu-io), the server must stop cleanly on SIGTERM, the
# image must pass qemu-img check (no leaks: the server closed it), and
# every eighth must hold its write's payload or zeroes, never a mix, and
# the payload wherever the write was acknowledged. qemu-nbd runs the same
# scenario first, so the expectations are the peer's behaviour too.
. "$(dirname "$0")/nbd-lib.sh"
requires python3 qemu-nbd
CLIENTS=8
WRITES=96
LIVENESS=15

client() { # PORT SEED ACKS_FILE
	timeout 60 python3 - "$(dirname "$0")/nbd-abandon.py" "$1" "$CLIENTS" \
		"$WRITES" "$2" >"$3" 2>"$T/client.err" <<'PY' ||
import importlib.util
import random
import socket
import struct
import sys

spec = importlib.util.spec_from_file_location("abandon", sys.argv[1])
abandon = importlib.util.module_from_spec(spec)
spec.loader.exec_module(abandon)
port, clients, writes = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(int(sys.argv[5]))
CMD_WRITE, REPLY_MAGIC, PIECE, CLUSTER = 1, 0x67446698, 8192, 65536

conns = [abandon.handshake("127.0.0.1", port, PIECE)[0]
         for _ in range(clients)]
# Round robin, so that every cluster gets writes from every client at once.
for j in range(writes):
    for i, s in enumerate(conns):
        payload = struct.pack(">HH", i, j) * (PIECE // 4)
        s.sendall(struct.pack(">IHHQQI", abandon.REQ_MAGIC, 0, CMD_WRITE,
                              i * writes + j, j * CLUSTER + i * PIECE,
                              PIECE) + payload)
for i, s in enumerate(conns):
    for _ in range(rng.randrange(writes // 2)):
        magic, err, cookie = struct.unpack(
            ">IIQ", abandon.recv_exact(s, 16))
        if magic != REPLY_MAGIC or err:
            sys.exit("client %d: reply magic %#x error %d" % (i, magic, err))
        print(cookie // writes, cookie % writes)
    if i % 2 == 0:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    s.close()
PY
		{
			cat "$T/client.err" >&2
			fail "the abandoning clients failed"
		}
}

# Every eighth holds its payload or zeroes, and the payload when acked.
verify() { # RAW ACKS_FILE
	python3 - "$1" "$2" "$CLIENTS" "$WRITES" <<'PY'
import struct
import sys

data = open(sys.argv[1], "rb").read()
acked = {tuple(map(int, ln.split())) for ln in open(sys.argv[2])}
clients, writes = int(sys.argv[3]), int(sys.argv[4])
PIECE, CLUSTER, bad, written = 8192, 65536, 0, 0
for j in range(writes):
    for i in range(clients):
        off = j * CLUSTER + i * PIECE
        got = data[off:off + PIECE]
        want = struct.pack(">HH", i, j) * (PIECE // 4)
        if got == want:
            written += 1
        elif got != bytes(PIECE) or (i, j) in acked:
            bad += 1
            if bad <= 5:
                print("client %d write %d at %#x: %s" % (
                    i, j, off, "acknowledged but not there"
                    if got == bytes(PIECE) else "torn or foreign data"))
print("%d of %d writes there, %d acknowledged, %d wrong" % (
    written, clients * writes, len(acked), bad))
sys.exit(1 if bad else 0)
PY
}

served() { # URI
	local t0=$SECONDS
	until timeout 10 qemu-io -f raw -c "write -P 0x6b 63M 1M" \
		-c "read -P 0x6b 63M 1M" "$1" >"$T/io.log" 2>&1; do
		[ $((SECONDS - t0)) -lt $LIVENESS ] || {
			cat "$T/io.log" >&2
			fail "no new client served within ${LIVENESS} s: $1"
		}
		sleep 0.2
	done
}

for server in qemu-nbd img-nbd; do
	img=$T/$server.qcow2
	qemu-img create -q -f qcow2 "$img" 64M
	PORT=$(free_port)
	if [ $server = qemu-nbd ]; then
		qemu-nbd --fork --pid-file "$T/q.pid" -t -e $((CLIENTS + 1)) \
			-b 127.0.0.1 \
			-p "$PORT" -f qcow2 "$img" || fail "qemu-nbd did not start"
		at_exit "kill -9 \$(cat '$T/q.pid' 2>/dev/null) 2>/dev/null"
	else
		nbd_start a -t -b 127.0.0.1 -p "$PORT" -f qcow2 "$img"
	fi
	client "$PORT" "$RANDOM" "$T/$server.acks"
	served "nbd://127.0.0.1:$PORT"
	if [ $server = qemu-nbd ]; then
		kill -TERM "$(cat "$T/q.pid")"
		for _ in $(seq 100); do
			kill -0 "$(cat "$T/q.pid")" 2>/dev/null || break
			sleep 0.1
		done
	else
		kill -0 "$(cat "$T/a.pid")" || fail "img-nbd died"
		nbd_stop a
	fi
	must qemu-img convert -f qcow2 -O raw "$img" "$T/$server.raw"
	verify "$T/$server.raw" "$T/$server.acks" >"$T/verify.log" || {
		cat "$T/verify.log" >&2
		fail "$server: the data of the abandoned writes is wrong"
	}
	qcheck "$img"
	echo "$server: $(tail -n1 "$T/verify.log")"
done
echo ok
