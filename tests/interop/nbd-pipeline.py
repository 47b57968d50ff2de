#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A client that sends all its reads before it reads any reply, run by
test-nbd-pipeline-replies.sh.

Usage: nbd-pipeline.py unix:PATH|tcp:HOST:PORT simple|structured REF N SEED

Negotiates simple or structured replies, sends N NBD_CMD_READs of random
sizes (512 B to 256 KiB) and offsets in one go with a small receive buffer,
waits half a second so that the server's replies back up (img-nbd then
leaves what the socket refuses, often half a reply, to another thread),
and only then reads the replies: every cookie must be answered exactly once
with the bytes REF (the raw image the export was made from) holds there.
Prints a summary line; exits 1 on any mismatch.
"""
import random
import socket
import struct
import sys
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
OPT_GO, OPT_STRUCTURED = 7, 8
REP_ACK = 1
CMD_READ = 0
T_NONE, T_DATA, T_HOLE = 0, 1, 2
F_DONE = 1


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise ConnectionError("server closed the connection")
        out += chunk
    return bytes(out)


def option(s, opt, data):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
    while True:
        magic, _, rtype, ln = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, ln)
        if magic != REPMAGIC:
            raise ConnectionError("bad option reply magic")
        if rtype & 0x80000000:
            raise ConnectionError("option %d refused: %#x" % (opt, rtype))
        if rtype == REP_ACK:
            return


def connect(where):
    if where.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        addr = where[5:]
    else:
        host, port = where[4:].rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = (host, int(port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.settimeout(30)
    s.connect(addr)
    magic, opt, _ = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise ConnectionError("bad greeting")
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    return s


def main():
    where, mode, ref_path = sys.argv[1], sys.argv[2], sys.argv[3]
    n, seed = int(sys.argv[4]), int(sys.argv[5])
    with open(ref_path, "rb") as f:
        ref = f.read()
    rnd = random.Random(seed)
    s = connect(where)
    structured = mode == "structured"
    if structured:
        option(s, OPT_STRUCTURED, b"")
    option(s, OPT_GO, b"\0" * 6)

    want = {}
    reqs = []
    for cookie in range(n):
        ln = rnd.choice((512, 4096, 4096, 65536, 262144,
                         rnd.randrange(1, 512) * 512))
        off = rnd.randrange(0, (len(ref) - ln) // 512 + 1) * 512
        want[cookie] = (off, ln)
        reqs.append(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, cookie,
                                off, ln))
    s.sendall(b"".join(reqs))
    time.sleep(0.5)

    bad = 0
    got = {}
    while len(got) < n:
        if not structured:
            magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
            if magic != SIMPLE_MAGIC or err or cookie not in want:
                raise ConnectionError("bad reply magic %#x error %d "
                                      "cookie %d" % (magic, err, cookie))
            off, ln = want[cookie]
            data = recv_exact(s, ln)
        else:
            magic, flags, typ, cookie, ln = struct.unpack(
                ">IHHQI", recv_exact(s, 20))
            payload = recv_exact(s, ln)
            if magic != STRUCT_MAGIC or cookie not in want:
                raise ConnectionError("bad chunk magic %#x cookie %d" %
                                      (magic, cookie))
            off, rlen = want[cookie]
            if typ == T_DATA:
                coff = struct.unpack(">Q", payload[:8])[0]
                data = payload[8:]
            elif typ == T_HOLE:
                coff, hlen = struct.unpack(">QI", payload)
                data = b"\0" * hlen
            elif typ == T_NONE:
                coff, data = off, b""
            else:
                raise ConnectionError("cookie %d: chunk type %d" %
                                      (cookie, typ))
            if data and (coff < off or coff + len(data) > off + rlen):
                raise ConnectionError("cookie %d: chunk outside the "
                                      "request" % cookie)
            if data != ref[coff:coff + len(data)]:
                bad += 1
                print("cookie %d: %d bytes at %d differ from the image" %
                      (cookie, len(data), coff))
            if not flags & F_DONE:
                continue
            data = None
        if cookie in got:
            raise ConnectionError("cookie %d answered twice" % cookie)
        got[cookie] = True
        if data is not None and data != ref[off:off + ln]:
            bad += 1
            print("cookie %d: %d bytes at %d differ from the image" %
                  (cookie, ln, off))
    total = sum(ln for _, ln in want.values())
    print("%s %s: %d reads (%d KiB) answered, %d wrong" %
          (where.split(":")[0], mode, n, total >> 10, bad))
    s.close()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
