#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Hostile NBD client cases against img-nbd, run by test-nbd-hostile.sh.

Usage: nbd-hostile.py SOCKET CAPPED_SOCKET TLS_SOCKET CA_FILE fast|slow

SOCKET serves "exp" (64 MiB, writable) and "ro" (read-only); CAPPED_SOCKET
the same image with a cap of 2 connections; TLS_SOCKET requires x509 TLS
(server certificate signed by CA_FILE). "slow" runs only the cases that
wait on the server's timeouts, "fast" the others. Each case opens its own connection,
misbehaves in one way (bad magics, unknown options, commands and flags,
zero, oversize and overflowing lengths, truncated payloads, disconnects
mid-request, STARTTLS misuse, options after failed negotiation, very long
names, stalled handshakes) and checks the reply or disconnect the protocol
asks for. Meanwhile a second client does verified writes and reads on its
own range of "exp" and must see no error. Prints one line per failed case
and a summary; exits 1 if any case failed.
"""
import os
import random
import socket
import ssl
import struct
import sys
import threading
import time
import warnings

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_LIST_META = 6, 7, 8, 9
OPT_SET_META, OPT_EXTENDED = 10, 11
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 0x80000000
ERR_UNSUP, ERR_POLICY, ERR_INVALID = ERR + 1, ERR + 2, ERR + 3
ERR_TLS_REQD, ERR_UNKNOWN, ERR_TOO_BIG = ERR + 5, ERR + 6, ERR + 9

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_ZERO, CMD_BS = 5, 6, 7
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO, F_PAYLOAD = 1, 2, 4, 8, 16, 32
EPERM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP = 1, 22, 28, 75, 95

SIZE = 64 << 20
M = 1 << 20
VERIFY_OFF = 48 * M  # the verifier's range: [48M, 64M)


class Closed(Exception):
    pass


class Conn:
    def __init__(self, path, timeout=5.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.extended = False
        self.structured = False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def send(self, b):
        self.s.sendall(b)

    def recv(self, n):
        out = b""
        while len(out) < n:
            try:
                chunk = self.s.recv(n - len(out))
            except (ConnectionResetError, BrokenPipeError):
                raise Closed()
            if not chunk:
                raise Closed()
            out += chunk
        return out

    def at_eof(self, wait=5.0):
        """True if the server closes the connection (nothing more arrives)."""
        self.s.settimeout(wait)
        try:
            while True:
                b = self.s.recv(65536)
                if not b:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # -- handshake --
    def greet(self, cflags=3):
        magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
        assert hflags & 1, "not fixed newstyle"
        self.send(struct.pack(">I", cflags))

    def opt(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def reply(self):
        magic, opt, rtype, ln = struct.unpack(">QIII", self.recv(20))
        if magic != REPMAGIC:
            raise AssertionError("bad option reply magic %#x" % magic)
        return opt, rtype, self.recv(ln)

    def replies_until_final(self):
        out = []
        while True:
            o, t, d = self.reply()
            out.append((t, d))
            if t == REP_ACK or t & ERR:
                return out

    def go(self, name=b"exp", structured=True, extended=False, meta=None):
        if extended:
            self.opt(OPT_EXTENDED)
            assert self.reply()[1] == REP_ACK
            self.extended = self.structured = True
        elif structured and not self.structured:
            self.opt(OPT_STRUCTURED)
            assert self.reply()[1] == REP_ACK
            self.structured = True
        if meta:
            self.opt(OPT_SET_META, meta_payload(name, meta))
            self.replies_until_final()
        self.opt(OPT_GO, struct.pack(">I", len(name)) + name + b"\0\0")
        r = self.replies_until_final()
        assert r[-1][0] == REP_ACK, "GO failed: %r" % (r,)

    # -- transmission --
    def request(self, cmd, off=0, length=0, flags=0, cookie=1, payload=b""):
        if self.extended:
            hdr = struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, cmd, cookie,
                              off, length)
        else:
            hdr = struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, off,
                              length & 0xFFFFFFFF)
        self.send(hdr + payload)

    def read_reply(self):
        """One reply message: (cookie, error, type, flags, payload)."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_MAGIC:
            err, cookie = struct.unpack(">IQ", self.recv(12))
            return cookie, err, None, 1, b""
        if magic == STRUCT_MAGIC:
            flags, typ, cookie, ln = struct.unpack(">HHQI", self.recv(16))
        elif magic == EXT_REPLY_MAGIC:
            flags, typ, cookie, _off, ln = struct.unpack(">HHQQQ",
                                                         self.recv(28))
        else:
            raise AssertionError("bad reply magic %#x" % magic)
        payload = self.recv(ln)
        err = struct.unpack(">I", payload[:4])[0] if typ & 0x8000 else 0
        return cookie, err, typ, flags, payload

    def command(self, cmd, off=0, length=0, flags=0, payload=b"",
                cookie=7):
        """Send one request; return (error, data or chunks)."""
        self.request(cmd, off, length, flags, cookie, payload)
        data = bytearray()
        chunks = []
        err = 0
        while True:
            ck, e, typ, fl, pl = self.read_reply()
            if ck != cookie:
                raise AssertionError("cookie %d, expected %d" % (ck, cookie))
            if typ is None:  # simple reply
                if not e and cmd == CMD_READ:
                    data = self.recv(length)
                return e, bytes(data)
            if e:
                err = e
            chunks.append((typ, pl))
            if typ == 1:
                o = struct.unpack(">Q", pl[:8])[0]
                data += b"\0" * (o + len(pl) - 8 - off - len(data))
                data[o - off:o - off + len(pl) - 8] = pl[8:]
            elif typ == 2:
                o, n = struct.unpack(">QI", pl[:12])
                data += b"\0" * (o + n - off - len(data))
            if fl & 1:
                return err, (bytes(data) if cmd == CMD_READ else chunks)


def meta_payload(name, queries):
    b = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        b += struct.pack(">I", len(q)) + q
    return b


def info_payload(name, infos=()):
    return (struct.pack(">I", len(name)) + name +
            struct.pack(">H", len(infos)) +
            b"".join(struct.pack(">H", i) for i in infos))


# ---------------------------------------------------------------- cases

CASES = []


def case(name, slow=False):
    """Register a case; slow ones wait on server timeouts (seconds)."""
    def deco(fn):
        CASES.append((name, fn, slow))
        return fn
    return deco


def expect_opt_error(c, opt, data, want):
    c.opt(opt, data)
    r = c.replies_until_final()
    t = r[-1][0]
    assert t == want, "option %d: reply %#x, expected %#x" % (opt, t, want)


def still_usable(c):
    """After an error the connection negotiates on: GO and read 4 KiB."""
    c.go()
    e, d = c.command(CMD_READ, 0, 4096)
    assert e == 0 and len(d) == 4096, "read after error failed: %d" % e


def add_handshake_cases(path):
    @case("bad client flags")
    def _():
        c = Conn(path)
        c.greet(cflags=0x80)
        assert c.at_eof(), "server kept a client with unknown flags"

    @case("bad option magic")
    def _():
        c = Conn(path)
        c.greet()
        c.send(struct.pack(">QII", 0x1234, OPT_GO, 0))
        assert c.at_eof()

    @case("oversize option length (4 GiB - 1)")
    def _():
        c = Conn(path)
        c.greet()
        c.send(struct.pack(">QII", IHAVEOPT, OPT_INFO, 0xFFFFFFFF))
        assert c.at_eof()

    @case("option payload over the cap is skipped: ERR_TOO_BIG")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_INFO, b"\0" * (100 * 1024))
        assert c.reply()[1] == ERR_TOO_BIG
        still_usable(c)

    for o in (0, 4, 12, 13, 100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF):
        @case("unknown option %#x: ERR_UNSUP, negotiation goes on" % o)
        def _(o=o):
            c = Conn(path)
            c.greet()
            expect_opt_error(c, o, b"xyz", ERR_UNSUP)
            still_usable(c)

    @case("LIST with data: ERR_INVALID")
    def _():
        c = Conn(path)
        c.greet()
        expect_opt_error(c, OPT_LIST, b"x", ERR_INVALID)
        still_usable(c)

    @case("LIST names both exports")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_LIST)
        r = c.replies_until_final()
        names = sorted(d[4:4 + struct.unpack(">I", d[:4])[0]]
                       for t, d in r if t == REP_SERVER)
        assert names == [b"exp", b"ro"], names

    @case("STARTTLS on a server without TLS: ERR_POLICY, twice")
    def _():
        c = Conn(path)
        c.greet()
        expect_opt_error(c, OPT_STARTTLS, b"", ERR_POLICY)
        expect_opt_error(c, OPT_STARTTLS, b"", ERR_POLICY)
        still_usable(c)

    bad_infos = {
        "name length past the payload": struct.pack(">I", 100) + b"exp",
        "name length 4 GiB": struct.pack(">I", 0xFFFFFFFF) + b"exp\0\0",
        "no info count": struct.pack(">I", 3) + b"exp",
        "info count too high": info_payload(b"exp")[:-2] + b"\0\5",
        "trailing byte": info_payload(b"exp", [0]) + b"\1",
        "NUL in name": info_payload(b"e\0p"),
        "name over 4096 bytes": info_payload(b"a" * 5000),
        "empty payload": b"",
        "3 bytes": b"\0\0\0",
    }
    for what, payload in bad_infos.items():
        for opt in (OPT_INFO, OPT_GO):
            @case("%s %s: ERR_INVALID" % ("INFO" if opt == OPT_INFO
                                          else "GO", what))
            def _(opt=opt, payload=payload):
                c = Conn(path)
                c.greet()
                expect_opt_error(c, opt, payload, ERR_INVALID)
                still_usable(c)

    for name in (b"nope", b"a" * 4096, b"EXP", b"exp "):
        @case("GO unknown export %r..: ERR_UNKNOWN, then GO works" %
              name[:8])
        def _(name=name):
            c = Conn(path)
            c.greet()
            expect_opt_error(c, OPT_GO, info_payload(name), ERR_UNKNOWN)
            still_usable(c)

    @case("INFO then GO on the same connection")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_INFO, info_payload(b"exp", [0, 1, 2, 3, 99]))
        r = c.replies_until_final()
        assert r[-1][0] == REP_ACK
        info = [d for t, d in r if t == REP_INFO and d[:2] == b"\0\0"]
        assert info and struct.unpack(">Q", info[0][2:10])[0] == SIZE
        still_usable(c)

    @case("EXPORT_NAME unknown: disconnect")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_EXPORT_NAME, b"nope")
        assert c.at_eof()

    @case("EXPORT_NAME 60000 bytes: disconnect")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_EXPORT_NAME, b"a" * 60000)
        assert c.at_eof()

    @case("EXPORT_NAME with NUL: disconnect")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_EXPORT_NAME, b"ex\0p")
        assert c.at_eof()

    @case("EXPORT_NAME ok, NO_ZEROES honoured")
    def _():
        c = Conn(path)
        c.greet(cflags=3)
        c.opt(OPT_EXPORT_NAME, b"exp")
        size, flags = struct.unpack(">QH", c.recv(10))
        assert size == SIZE
        e, d = c.command(CMD_READ, 0, 512)
        assert e == 0 and len(d) == 512

    @case("EXPORT_NAME without NO_ZEROES: 124 zero bytes")
    def _():
        c = Conn(path)
        c.greet(cflags=1)
        c.opt(OPT_EXPORT_NAME, b"")
        b = c.recv(134)
        assert b[10:] == b"\0" * 124
        e, d = c.command(CMD_READ, 0, 512)
        assert e == 0

    for opt, what in ((OPT_STRUCTURED, "STRUCTURED_REPLY"),
                      (OPT_EXTENDED, "EXTENDED_HEADERS")):
        @case("%s with data: ERR_INVALID" % what)
        def _(opt=opt):
            c = Conn(path)
            c.greet()
            expect_opt_error(c, opt, b"x", ERR_INVALID)
            still_usable(c)

        @case("%s twice: second ERR_INVALID" % what)
        def _(opt=opt):
            c = Conn(path)
            c.greet()
            c.opt(opt)
            assert c.reply()[1] == REP_ACK
            expect_opt_error(c, opt, b"", ERR_INVALID)

    for opt in (OPT_LIST_META, OPT_SET_META):
        nm = "LIST_META" if opt == OPT_LIST_META else "SET_META"

        @case("%s before structured replies: ERR_INVALID" % nm)
        def _(opt=opt):
            c = Conn(path)
            c.greet()
            expect_opt_error(c, opt, meta_payload(b"exp", [b"base:"]),
                             ERR_INVALID)
            still_usable(c)

        bad = {
            "empty": b"",
            "name past end": struct.pack(">I", 99) + b"exp",
            "no query count": struct.pack(">I", 3) + b"exp",
            "query count too high": meta_payload(b"exp", [b"base:"])[:7] +
            b"\0\0\0\5" + meta_payload(b"exp", [b"base:"])[11:],
            "query past end": meta_payload(b"exp", []) [:-4] +
            b"\0\0\0\1\0\0\1\0abc",
            "trailing bytes": meta_payload(b"exp", [b"base:"]) + b"zz",
            "query with NUL": meta_payload(b"exp", [b"base:\0"]),
            "query over 4096": meta_payload(b"exp", [b"q" * 5000]),
        }
        for what, payload in bad.items():
            @case("%s %s: ERR_INVALID" % (nm, what))
            def _(opt=opt, payload=payload):
                c = Conn(path)
                c.greet()
                c.opt(OPT_STRUCTURED)
                c.reply()
                c.structured = True
                expect_opt_error(c, opt, payload, ERR_INVALID)
                still_usable(c)

        @case("%s unknown export: ERR_UNKNOWN" % nm)
        def _(opt=opt):
            c = Conn(path)
            c.greet()
            c.opt(OPT_STRUCTURED)
            c.reply()
            expect_opt_error(c, opt, meta_payload(b"zz", [b"base:"]),
                             ERR_UNKNOWN)

        @case("%s unknown namespace: ACK, no context" % nm)
        def _(opt=opt):
            c = Conn(path)
            c.greet()
            c.opt(OPT_STRUCTURED)
            c.reply()
            c.opt(opt, meta_payload(b"exp", [b"x-foo:bar", b"base:nope"]))
            r = c.replies_until_final()
            assert [t for t, d in r] == [REP_ACK], r

    @case("LIST_META with no query lists base:allocation")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_STRUCTURED)
        c.reply()
        c.opt(OPT_LIST_META, meta_payload(b"exp", []))
        r = c.replies_until_final()
        assert (REP_META, b"\0\0\0\0base:allocation") in r, r

    @case("BLOCK_STATUS with contexts set for another export: EINVAL")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_STRUCTURED)
        c.reply()
        c.opt(OPT_SET_META, meta_payload(b"ro", [b"base:allocation"]))
        c.replies_until_final()
        c.go(structured=False)
        e, _ = c.command(CMD_BS, 0, 4096)
        assert e == EINVAL, e

    @case("ABORT: ACK and close")
    def _():
        c = Conn(path)
        c.greet()
        c.opt(OPT_ABORT)
        try:
            assert c.reply()[1] == REP_ACK
        except Closed:
            pass
        assert c.at_eof()

    for cut in (0, 5, 17, 18, 20):
        @case("disconnect after %d bytes of handshake" % cut)
        def _(cut=cut):
            c = Conn(path)
            c.recv(18)
            msg = struct.pack(">I", 3) + struct.pack(
                ">QII", IHAVEOPT, OPT_GO, 9) + b"\0\0\0\3exp"
            c.send(msg[:cut])
            c.close()

    @case("truncated option payload then close")
    def _():
        c = Conn(path)
        c.greet()
        c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 1000) + b"abc")
        c.close()

    @case("silent client is dropped by the handshake timeout", slow=True)
    def _():
        c = Conn(path, timeout=10)
        c.recv(18)
        t0 = time.time()
        assert c.at_eof(wait=8), "still connected after 8 s"
        assert time.time() - t0 < 8

    @case("slow-drip client is dropped by the handshake deadline", slow=True)
    def _():
        c = Conn(path, timeout=10)
        c.greet()
        msg = struct.pack(">QII", IHAVEOPT, OPT_LIST, 0)
        t0 = time.time()
        try:
            for i in range(100):
                c.send(msg[i % len(msg):i % len(msg) + 1])
                time.sleep(0.2)
                if time.time() - t0 > 8:
                    break
        except (BrokenPipeError, ConnectionResetError):
            return
        assert c.at_eof(wait=3), "slow client kept past the deadline"

    @case("1000 unknown options, 50 pipelined at a time, then GO")
    def _():
        c = Conn(path)
        c.greet()
        for batch in range(20):
            for i in range(50):
                c.opt(1000 + 50 * batch + i)
            for i in range(50):
                assert c.reply()[1] == ERR_UNSUP
        still_usable(c)


def add_tls_cases(tls_path, ca):
    for opt in (OPT_LIST, OPT_GO, OPT_INFO, OPT_STRUCTURED, OPT_EXTENDED,
                OPT_SET_META, OPT_LIST_META, 77):
        @case("TLS server: option %d before STARTTLS: ERR_TLS_REQD" % opt)
        def _(opt=opt):
            c = Conn(tls_path)
            c.greet()
            expect_opt_error(c, opt, b"", ERR_TLS_REQD)

    @case("TLS server: EXPORT_NAME before STARTTLS: disconnect")
    def _():
        c = Conn(tls_path)
        c.greet()
        c.opt(OPT_EXPORT_NAME, b"exp")
        assert c.at_eof()

    @case("TLS server: STARTTLS with data: ERR_INVALID")
    def _():
        c = Conn(tls_path)
        c.greet()
        expect_opt_error(c, OPT_STARTTLS, b"x", ERR_INVALID)

    @case("TLS server: plaintext after the STARTTLS ack: disconnect")
    def _():
        c = Conn(tls_path)
        c.greet()
        c.opt(OPT_STARTTLS)
        assert c.reply()[1] == REP_ACK
        c.send(b"this is not a TLS ClientHello" * 10)
        assert c.at_eof()

    def tls_conn():
        c = Conn(tls_path)
        c.greet()
        c.opt(OPT_STARTTLS)
        assert c.reply()[1] == REP_ACK
        ctx = ssl.create_default_context(cafile=ca)
        ctx.check_hostname = False
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        c.s = ctx.wrap_socket(c.s, server_hostname="localhost")
        return c

    @case("TLS server: STARTTLS twice: ERR_INVALID, session usable")
    def _():
        c = tls_conn()
        expect_opt_error(c, OPT_STARTTLS, b"", ERR_INVALID)
        still_usable(c)

    @case("TLS server: TLS 1.1 client refused")
    def _():
        c = Conn(tls_path)
        c.greet()
        c.opt(OPT_STARTTLS)
        assert c.reply()[1] == REP_ACK
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            return  # this OpenSSL cannot even offer TLS 1.1
        try:
            ctx.wrap_socket(c.s, server_hostname="localhost")
        except (ssl.SSLError, OSError):
            return
        raise AssertionError("TLS 1.1 handshake succeeded")

    @case("TLS server: full session with reads and a write")
    def _():
        c = tls_conn()
        c.go(meta=[b"base:allocation"])
        e, d = c.command(CMD_READ, 0, 65536)
        assert e == 0 and len(d) == 65536
        e, _ = c.command(CMD_WRITE, 40 * M, 4096, payload=b"\x55" * 4096)
        assert e == 0
        e, d = c.command(CMD_READ, 40 * M, 4096)
        assert d == b"\x55" * 4096
        e, ch = c.command(CMD_BS, 0, M)
        assert e == 0 and ch[0][0] == 5


ALL_CMDS = (CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_ZERO,
            CMD_BS)


def payload_for(cmd, length):
    return b"\x99" * length if cmd == CMD_WRITE else b""


def add_transmission_cases(path):
    def conn(**kw):
        c = Conn(path)
        c.greet()
        c.go(meta=kw.pop("meta", [b"base:allocation"]), **kw)
        return c

    @case("bad request magic: disconnect")
    def _():
        c = conn()
        c.send(struct.pack(">IHHQQI", 0xDEADBEEF, 0, 0, 1, 0, 512))
        assert c.at_eof()

    @case("extended request magic without extended headers: disconnect")
    def _():
        c = conn()
        c.send(struct.pack(">IHHQQQ", EXT_REQ_MAGIC, 0, 0, 1, 0, 512))
        assert c.at_eof()

    @case("compact request magic with extended headers: disconnect")
    def _():
        c = conn(extended=True)
        c.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, 1, 0, 512) + b"\0" * 4)
        assert c.at_eof()

    for cmd in (8, 9, 100, 0x7FFF, 0xFFFF):
        @case("unknown command %d: EINVAL" % cmd)
        def _(cmd=cmd):
            c = conn()
            e, _ = c.command(cmd, 0, 512)
            assert e == EINVAL, e
            e, _ = c.command(CMD_READ, 0, 512)
            assert e == 0

    for cmd in ALL_CMDS:
        for bit in range(6, 16):
            @case("command %d with unknown flag bit %d: EINVAL" % (cmd, bit))
            def _(cmd=cmd, bit=bit):
                c = conn()
                n = 512 if cmd != CMD_FLUSH else 0
                e, _ = c.command(cmd, 0, n, 1 << bit, payload_for(cmd, n))
                assert e == EINVAL, e
                e, _ = c.command(CMD_READ, 0, 512)
                assert e == 0

    wrong_flags = [(CMD_WRITE, F_DF), (CMD_READ, F_REQ_ONE),
                   (CMD_READ, F_NO_HOLE), (CMD_WRITE, F_FAST_ZERO),
                   (CMD_TRIM, F_NO_HOLE), (CMD_BS, F_DF),
                   (CMD_FLUSH, F_DF), (CMD_CACHE, F_FAST_ZERO),
                   (CMD_READ, F_PAYLOAD), (CMD_WRITE, F_PAYLOAD)]
    for cmd, fl in wrong_flags:
        @case("command %d with flag %#x not valid for it: EINVAL" %
              (cmd, fl))
        def _(cmd=cmd, fl=fl):
            c = conn()
            n = 512 if cmd != CMD_FLUSH else 0
            e, _ = c.command(cmd, 0, n, fl, payload_for(cmd, n))
            assert e == EINVAL, e

    @case("DF on a connection without structured replies: EINVAL")
    def _():
        c = conn(structured=False, meta=None)
        e, _ = c.command(CMD_READ, 0, 512, F_DF)
        assert e == EINVAL

    @case("BLOCK_STATUS without meta contexts: EINVAL")
    def _():
        c = conn(meta=None)
        e, _ = c.command(CMD_BS, 0, 512)
        assert e == EINVAL

    for cmd in (CMD_READ, CMD_WRITE, CMD_TRIM, CMD_CACHE, CMD_ZERO, CMD_BS):
        @case("command %d with length 0: EINVAL" % cmd)
        def _(cmd=cmd):
            c = conn()
            e, _ = c.command(cmd, 4096, 0)
            assert e == EINVAL, e

        for off, n, what in ((2**64 - 1, 2, "offset+length overflow"),
                             (SIZE, 1, "at the end"),
                             (SIZE - 1, 2, "across the end"),
                             (2**63, 512, "offset 2^63")):
            @case("command %d %s: error, connection lives" % (cmd, what))
            def _(cmd=cmd, off=off, n=n):
                c = conn()
                e, _ = c.command(cmd, off, n, 0, payload_for(cmd, n))
                want = ENOSPC if cmd in (CMD_WRITE, CMD_ZERO) else EINVAL
                assert e == want, (e, want)
                e, _ = c.command(CMD_READ, 0, 512)
                assert e == 0

    @case("READ of 32 MiB + 1: EOVERFLOW, connection lives")
    def _():
        c = conn()
        e, _ = c.command(CMD_READ, 0, 32 * M + 1)
        assert e == EOVERFLOW
        e, _ = c.command(CMD_READ, 0, 512)
        assert e == 0

    @case("READ of exactly 32 MiB works")
    def _():
        c = conn()
        e, d = c.command(CMD_READ, 0, 32 * M)
        assert e == 0 and len(d) == 32 * M

    @case("WRITE of 32 MiB + 1: error then disconnect")
    def _():
        c = conn()
        c.request(CMD_WRITE, 0, 32 * M + 1)
        ck, e, *_ = c.read_reply()
        assert e != 0
        assert c.at_eof()

    @case("WRITE of 4 GiB - 1 header only: disconnect, no allocation")
    def _():
        c = conn()
        c.request(CMD_WRITE, 0, 0xFFFFFFFF)
        try:
            ck, e, *_ = c.read_reply()
            assert e != 0
        except Closed:
            pass
        assert c.at_eof()

    for n in (0, 1, 511, 4095):
        @case("WRITE of 4096 with %d payload bytes then close" % n)
        def _(n=n):
            c = conn()
            c.request(CMD_WRITE, 0, 4096, payload=b"\1" * n)
            c.close()

    @case("half a request header then close")
    def _():
        c = conn()
        c.send(struct.pack(">IHHQ", REQ_MAGIC, 0, 0, 1))
        c.close()

    @case("64 reads in flight then close")
    def _():
        c = conn()
        for i in range(64):
            c.request(CMD_READ, i * 65536, 65536, cookie=i)
        c.close()

    @case("64 writes in flight then close")
    def _():
        c = conn()
        for i in range(64):
            c.request(CMD_WRITE, i * 4096, 4096, cookie=i,
                      payload=bytes([i]) * 4096)
        c.close()

    @case("client that never reads its replies is dropped", slow=True)
    def _():
        c = conn()
        assert c.command(CMD_WRITE, 40 * M, M, 0, os.urandom(M))[0] == 0
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for i in range(8):
            c.request(CMD_READ, 40 * M, M, cookie=i)
        # No progress for the send timeout (10 s), once or twice.
        time.sleep(21)
        n = 0
        try:
            while True:
                _, e, _, fl, _ = c.read_reply()
                n += fl & 1
        except (Closed, OSError, AssertionError, struct.error):
            pass
        assert n < 8, "every reply arrived: the stalled client was kept"

    @case("DISC with requests in flight: all replied, then EOF")
    def _():
        c = conn()
        for i in range(16):
            c.request(CMD_READ, i * 4096, 4096, cookie=100 + i)
        c.request(CMD_DISC, cookie=999)
        got = set()
        while len(got) < 16:
            ck, e, typ, fl, pl = c.read_reply()
            if fl & 1:
                got.add(ck)
        assert got == set(range(100, 116))
        assert c.at_eof()

    @case("DISC with a non-zero length still disconnects")
    def _():
        c = conn()
        c.request(CMD_DISC, 5, 7)
        assert c.at_eof()

    @case("128 pipelined reads: every cookie answered once")
    def _():
        c = conn()
        for i in range(128):
            c.request(CMD_READ, random.randrange(0, SIZE - 8192), 8192,
                      cookie=i)
        seen = []
        while len(seen) < 128:
            ck, e, typ, fl, pl = c.read_reply()
            assert e == 0
            if fl & 1:
                seen.append(ck)
        assert sorted(seen) == list(range(128))

    for cmd, what in ((CMD_WRITE, "WRITE"), (CMD_TRIM, "TRIM"),
                      (CMD_ZERO, "WRITE_ZEROES")):
        @case("%s on the read-only export: EPERM" % what)
        def _(cmd=cmd):
            c = conn(name=b"ro")
            e, _ = c.command(cmd, 0, 4096, 0, payload_for(cmd, 4096))
            assert e == EPERM, e
            e, _ = c.command(CMD_READ, 0, 512)
            assert e == 0

    @case("FLUSH on the read-only export works")
    def _():
        c = conn(name=b"ro")
        e, _ = c.command(CMD_FLUSH)
        assert e == 0

    @case("write, FUA write, read back, zero, read zeroes")
    def _():
        c = conn()
        data = os.urandom(65536)
        assert c.command(CMD_WRITE, 8 * M, 65536, 0, data)[0] == 0
        assert c.command(CMD_WRITE, 9 * M, 4096, F_FUA,
                         data[:4096])[0] == 0
        assert c.command(CMD_READ, 8 * M, 65536)[1] == data
        assert c.command(CMD_ZERO, 8 * M, 65536)[0] == 0
        assert c.command(CMD_READ, 8 * M, 65536)[1] == b"\0" * 65536

    @case("FAST_ZERO: success or ENOTSUP, never data damage")
    def _():
        c = conn()
        assert c.command(CMD_WRITE, 12 * M, 4096, 0, b"\7" * 4096)[0] == 0
        e, _ = c.command(CMD_ZERO, 12 * M, 4096, F_FAST_ZERO)
        assert e in (0, ENOTSUP), e
        d = c.command(CMD_READ, 12 * M, 4096)[1]
        assert d == (b"\0" * 4096 if e == 0 else b"\7" * 4096)

    @case("read of an unwritten range comes back as a hole chunk")
    def _():
        c = conn()
        e, d = c.command(CMD_READ, 30 * M, M)
        assert e == 0 and d == b"\0" * M

    @case("DF read: one content chunk")
    def _():
        c = conn()
        c.request(CMD_READ, 30 * M, M, F_DF, cookie=5)
        n = 0
        while True:
            ck, e, typ, fl, pl = c.read_reply()
            n += typ in (1, 2)
            if fl & 1:
                break
        assert n == 1

    @case("BLOCK_STATUS REQ_ONE: one descriptor")
    def _():
        c = conn()
        e, ch = c.command(CMD_BS, 0, SIZE, F_REQ_ONE)
        assert e == 0 and len(ch) == 1 and len(ch[0][1]) == 12

    @case("BLOCK_STATUS whole image: lengths add up, within range")
    def _():
        c = conn()
        e, ch = c.command(CMD_BS, 0, SIZE)
        pl = ch[0][1]
        total = sum(struct.unpack(">I", pl[i:i + 4])[0]
                    for i in range(4, len(pl), 8))
        assert e == 0 and 0 < total <= SIZE

    @case("simple replies: read error has no payload")
    def _():
        c = conn(structured=False, meta=None)
        c.request(CMD_READ, SIZE, 4096, cookie=3)
        ck, e, typ, fl, pl = c.read_reply()
        assert e == EINVAL and typ is None
        assert c.command(CMD_READ, 0, 512)[0] == 0

    @case("extended headers: read, write, 64-bit block status")
    def _():
        c = conn(extended=True)
        data = os.urandom(8192)
        assert c.command(CMD_WRITE, 14 * M, 8192, 0, data)[0] == 0
        assert c.command(CMD_WRITE, 15 * M, 4096, F_PAYLOAD,
                         data[:4096])[0] == 0
        assert c.command(CMD_READ, 14 * M, 8192)[1] == data
        e, ch = c.command(CMD_BS, 0, SIZE)
        assert e == 0 and ch[0][0] == 6, ch[0][0]
        e, _ = c.command(CMD_ZERO, 0, 2**40)
        assert e == ENOSPC

    @case("extended headers: READ with PAYLOAD_LEN: disconnect")
    def _():
        c = conn(extended=True)
        c.request(CMD_READ, 0, 512, F_PAYLOAD)
        try:
            c.read_reply()
        except Closed:
            pass
        assert c.at_eof()

    @case("extended headers: WRITE of 2^40 bytes: disconnect")
    def _():
        c = conn(extended=True)
        c.request(CMD_WRITE, 0, 2**40)
        try:
            c.read_reply()
        except Closed:
            pass
        assert c.at_eof()


def add_cap_cases(capped):
    @case("connection cap: the third client is refused", slow=True)
    def _():
        a, b = Conn(capped), Conn(capped)
        a.recv(18)
        b.recv(18)
        c = Conn(capped)
        assert c.at_eof(wait=3), "third connection served"
        a.close()
        b.close()
        time.sleep(0.3)
        d = Conn(capped)
        d.greet()
        still_usable(d)


class Verifier(threading.Thread):
    """Verified I/O on [48M, 64M) of "exp" while the cases run."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.errors = []
        self.ops = 0

    def run(self):
        try:
            c = Conn(self.path, timeout=30)
            c.greet()
            c.go()
            rng = random.Random(1)
            shadow = {}
            while not self.stop.is_set():
                blk = rng.randrange(0, 16 * M // 65536)
                off = VERIFY_OFF + blk * 65536
                data = bytes([rng.randrange(256)]) * 65536
                e, _ = c.command(CMD_WRITE, off, 65536, 0, data, cookie=1)
                if e:
                    self.errors.append("write error %d" % e)
                    return
                shadow[off] = data
                off2 = rng.choice(list(shadow))
                e, d = c.command(CMD_READ, off2, 65536, cookie=2)
                if e or d != shadow[off2]:
                    self.errors.append("read at %d: error %d or wrong data"
                                       % (off2, e))
                    return
                if rng.random() < 0.1:
                    e, _ = c.command(CMD_FLUSH, cookie=3)
                    if e:
                        self.errors.append("flush error %d" % e)
                        return
                self.ops += 1
            c.request(CMD_DISC)
        except Exception as ex:  # noqa: the thread must report, not die
            self.errors.append("verifier: %r" % (ex,))


def main():
    path, capped, tls_path, ca, which = sys.argv[1:6]
    add_handshake_cases(path)
    add_transmission_cases(path)
    add_tls_cases(tls_path, ca)
    add_cap_cases(capped)
    v = Verifier(path)
    v.start()
    failed = []
    cases = [(n, f) for n, f, slow in CASES if slow == (which == "slow")]
    for name, fn in cases:
        t0 = time.time()
        try:
            fn()
        except Exception as ex:  # noqa: any exception fails the case
            failed.append(name)
            print("FAIL: %s: %r" % (name, ex))
        if time.time() - t0 > 1:
            print("%.1fs: %s" % (time.time() - t0, name))
    v.stop.set()
    v.join(60)
    if v.errors or v.ops < 5:
        failed.append("verifier")
        print("FAIL: verifier: %d ops, errors %s" % (v.ops, v.errors))
    print("%d cases, %d failed; verifier did %d verified write+read pairs"
          % (len(cases), len(failed), v.ops))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
