#!/bin/bash
# SPDX-License-Identifier: MIT
# NBD_CMD_CACHE and FUA on TRIM and WRITE_ZEROES. nbdinfo must see CACHE
# and FUA advertised. A raw client (nbd-hostile.py's Conn) sends CACHE,
# which must read the range through the image (with the file dropped from
# the page cache first, at least its length is resident afterwards: the
# server's reads go through io_uring, which /proc/PID/io does not count)
# and leave the data intact;
# CACHE past the end fails EINVAL. TRIM with FUA, and qemu-io's WRITE_ZEROES
# with FUA (write -z -f), must write back the image's metadata before the
# reply: qemu-img map -U on the served file shows the range as zeroes at
# once, while a TRIM without FUA leaves the on-disk map alone until a flush
# (qemu-io cannot show that for WRITE_ZEROES: it flushes when it closes).
. "$(dirname "$0")/nbd-lib.sh"
requires python3 nbdinfo

M=$((1 << 20))
qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
qemu-io -c "write -P 0x5a 0 16M" "$T/a.qcow2" >/dev/null
nbd_start s -t --discard=unmap -k "$T/s.sock" -x exp -f qcow2 "$T/a.qcow2"
pid=$(cat "$T/s.pid")
URI="nbd+unix:///exp?socket=$T/s.sock"

nbdinfo --json "$URI" >"$T/info.json" || fail "nbdinfo"
python3 - "$T/info.json" <<'EOF' || fail "CACHE or FUA not advertised"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
for k in ("can_cache", "can_fua", "can_trim", "can_zero"):
    assert e[k], k
EOF

# zero_on_disk OFF LEN: does qemu-img (reading the file itself) see zeroes?
zero_on_disk() {
	qemu-img map -U -f qcow2 --output=json "$T/a.qcow2" >"$T/map.json" ||
		fail "qemu-img map"
	python3 - "$T/map.json" "$1" "$2" <<'EOF'
import json, sys
off, ln = int(sys.argv[2]), int(sys.argv[3])
for e in json.load(open(sys.argv[1])):
    if e["start"] < off + ln and off < e["start"] + e["length"]:
        if e["data"] or not e["zero"]:
            sys.exit(1)
EOF
}

python3 - "$(dirname "$0")/nbd-hostile.py" "$T/s.sock" "$T/a.qcow2" <<'EOF' ||
import ctypes, importlib.util, mmap, os, sys
spec = importlib.util.spec_from_file_location("h", sys.argv[1])
h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
M = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]

def resident(path):
    """Bytes of path in the page cache (mincore over a mapping of it)."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    mm = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    page = mmap.PAGESIZE
    vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
    first = ctypes.c_char.from_buffer(mm)
    ret = libc.mincore(ctypes.addressof(first), size, vec)
    del first
    mm.close()
    assert ret == 0, os.strerror(ctypes.get_errno())
    return sum(1 for v in vec if v & 1) * page

def evict(path):
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)

c = h.Conn(sys.argv[2])
c.greet()
c.go()
evict(sys.argv[3])
r0 = resident(sys.argv[3])
assert r0 < 4 * M, "the file stayed in the page cache (%d bytes)" % r0
e, _ = c.command(h.CMD_CACHE, 0, 8 * M)
assert e == 0, "CACHE failed: %d" % e
r1 = resident(sys.argv[3])
assert r1 - r0 >= 8 * M, "CACHE read only %d bytes" % (r1 - r0)
e, _ = c.command(h.CMD_CACHE, 32 * M, 8 * M)  # never written: a hole
assert e == 0, "CACHE of a hole failed: %d" % e
e, _ = c.command(h.CMD_CACHE, 64 * M - 4096, 8192)
assert e == h.EINVAL, "CACHE past the end: %d" % e
e, d = c.command(h.CMD_READ, 0, M)
assert e == 0 and d == b"\x5a" * M, "data changed by CACHE"
assert c.command(h.CMD_TRIM, 0, M, h.F_FUA)[0] == 0, "TRIM with FUA"
assert c.command(h.CMD_TRIM, 2 * M, M)[0] == 0, "TRIM"
c.request(h.CMD_DISC)
EOF
	fail "raw client"
zero_on_disk 0 $M || fail "TRIM with FUA: metadata not written back"
zero_on_disk $((2 * M)) $M && fail "TRIM without FUA already on disk (test cannot tell)"

qemu-io -f raw -c "write -z -f 4M 1M" "$URI" >/dev/null || fail "qemu-io write -z -f"
zero_on_disk $((4 * M)) $M || fail "WRITE_ZEROES with FUA: metadata not written back"
qemu-io -f raw -c "flush" "$URI" >/dev/null || fail "qemu-io flush"
zero_on_disk $((2 * M)) $M || fail "TRIM not on disk after a flush"

nbd_stop s
qcheck "$T/a.qcow2"
qemu-io -c "read -P 0x5a 1M 1M" -c "read -P 0 4M 1M" -c "read -P 0x5a 8M 8M" \
	"$T/a.qcow2" >/dev/null || fail "contents after the requests"
echo ok
