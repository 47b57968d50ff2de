#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Abandoning NBD clients, run by test-nbd-abandon.sh.

Usage: nbd-abandon.py HOST PORT CLIENTS HOLD_SECONDS [READ_KIB [SERVER_PID]]

Opens CLIENTS connections; each does the fixed newstyle handshake (NBD_OPT_GO
on the default export, simple replies) and sends 64 NBD_CMD_READs of READ_KIB
(default 4096: 4 MiB) without reading any reply. With HOLD_SECONDS 0 every client then closes at
once; otherwise they all stay connected (with a small receive buffer, so the
server's replies back up) for that long and then close, and with SERVER_PID
the line "rchar at close: N" gives the server's rchar (/proc/PID/io) just
before they close. Exits 0 once every
client has queued its reads and closed; a client the server refused (a
handshake that fails) is an error, since the test runs within the cap.
"""
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
OPT_GO = 7
REP_ACK = 1
CMD_READ = 0
READS = 64


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("server closed the connection")
        out += chunk
    return out


def handshake(host, port, read_len):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Small before connect() so the window is small: the server's replies
    # back up at once instead of filling megabytes of socket buffers.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(20)
    s.connect((host, port))
    magic, opt, _ = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise ConnectionError("bad greeting")
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 6) + b"\0" * 6)
    size = None
    while True:
        magic, _, rtype, ln = struct.unpack(">QIII", recv_exact(s, 20))
        data = recv_exact(s, ln)
        if magic != REPMAGIC:
            raise ConnectionError("bad option reply magic")
        if rtype == 3 and ln >= 12 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        if rtype == REP_ACK:
            break
        if rtype & 0x80000000:
            raise ConnectionError("GO refused: %#x" % rtype)
    if not size or size < read_len:
        raise ConnectionError("export too small: %r" % size)
    return s, size


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    clients, hold = int(sys.argv[3]), float(sys.argv[4])
    read_len = (int(sys.argv[5]) if len(sys.argv) > 5 else 4096) << 10
    conns = []
    for i in range(clients):
        s, size = handshake(host, port, read_len)
        span = size // read_len
        reqs = b"".join(
            struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, i * READS + k,
                        ((i + k) % span) * read_len, read_len)
            for k in range(READS))
        s.sendall(reqs)
        if hold:
            conns.append(s)
        else:
            s.close()
    if hold:
        time.sleep(hold)
        if len(sys.argv) > 6:
            with open("/proc/%s/io" % sys.argv[6]) as f:
                rchar = [ln.split()[1] for ln in f
                         if ln.startswith("rchar:")][0]
            print("rchar at close: %s" % rchar, flush=True)
        for s in conns:
            s.close()
    print("%d clients queued %d x %d KiB reads and closed" %
          (clients, READS, read_len >> 10))


if __name__ == "__main__":
    main()
