#!/bin/bash
# SPDX-License-Identifier: MIT
# VHDX against qemu-img, for sparse, random and zero-heavy contents
# (tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): fixed and dynamic disks made by img and by
# qemu-img read identically through both and pass qemu-img check.
# Then: block sizes 1 and 256 MiB (qemu-img reads them), 4096-byte logical
# sectors (img round trip; qemu-img 7.2 refuses them), and log replay: a
# log entry holding the BAT sector, wiped in place, is replayed in memory
# on a read-only open (the file unchanged) and into the file on a
# read-write one, after which qemu-img reads the data and checks clean.
# img's writes into a qemu-made dynamic disk (BAT updates through the log)
# leave both headers current with an empty log; qemu-img reads them and
# checks clean.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vhdx
fm_contents

V=(vhdx:subformat=dynamic vhdx:subformat=fixed)
for c in sparse random zero; do
	tcase fm_direct $c "${V[@]}"
done

block_sizes() {
	local bs
	for bs in 1M 256M; do
		ctx="block_size=$bs"
		rm -f "$T/b.vhdx"
		must "$IMG" convert -f raw -O vhdx -o block_size=$bs "$T/c-mixed.raw" "$T/b.vhdx"
		fm_qcompare vhdx "$T/b.vhdx" "$T/c-mixed.raw"
		qcheck "$T/b.vhdx" -f vhdx
	done
	ctx="logical_sector_size=4096"
	must "$IMG" convert -f raw -O vhdx -o logical_sector_size=4096,block_size=1M "$T/c-mixed.raw" "$T/s4k.vhdx"
	fm_back vhdx "$T/s4k.vhdx" "$T/back.raw"
	fm_same "$T/back.raw" "$T/c-mixed.raw"
	"$IMG" info --output=json "$T/s4k.vhdx" | grep -q '"cluster-size": 1048576' ||
		fail "[$ctx] info"
}

log_replay() {
	ctx="log replay"
	must "$IMG" create -q -f vhdx -o block_size=1M "$T/l.vhdx" 8M
	must "$IMG" io -f vhdx -c 'write -P 0x3c 1M 64k' "$T/l.vhdx"
	# Move the BAT's first sector into a log entry (the way a writer
	# that crashed before updating the BAT in place leaves it) and wipe
	# it in place: only a replay of the log finds the data.
	python3 - "$T/l.vhdx" <<'PY' || fail "[$ctx] making the log"
import struct, sys, uuid
def crc32c(b, skip):
    c = 0xffffffff
    for i, x in enumerate(b):
        if skip <= i < skip + 4: x = 0
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
    return (~c) & 0xffffffff
M = 1 << 20
f = open(sys.argv[1], 'r+b'); d = bytearray(f.read())
bat = bytes(d[2 * M:2 * M + 4096])
guid = uuid.uuid4().bytes_le
seq = 0x1234
e = bytearray(8192)
e[0:4] = b'loge'
struct.pack_into('<IIQI', e, 8, 8192, 0, seq, 1)
e[32:48] = guid
struct.pack_into('<QQ', e, 48, len(d), len(d))
e[64:68] = b'desc'
struct.pack_into('<I', e, 68, struct.unpack_from('<I', bat, 4092)[0])
e[72:80] = bat[0:8]
struct.pack_into('<QQ', e, 80, 2 * M, seq)
e[4096:4100] = b'data'
struct.pack_into('<I', e, 4100, seq >> 32)
e[4104:8188] = bat[8:4092]
struct.pack_into('<I', e, 8188, seq & 0xffffffff)
struct.pack_into('<I', e, 4, crc32c(e, 4))
d[M:M + 8192] = e
d[2 * M:2 * M + 4096] = bytes(4096)
for h in (64 * 1024, 128 * 1024):
    d[h + 48:h + 64] = guid
    struct.pack_into('<I', d, h + 4, crc32c(d[h:h + 4096], 4))
f.seek(0); f.write(d)
PY
	cp "$T/l.vhdx" "$T/l2.vhdx"
	must "$IMG" io -f vhdx -r -c 'read -P 0x3c 1M 64k' -c 'read -P 0 0 1M' "$T/l.vhdx"
	cmp "$T/l.vhdx" "$T/l2.vhdx" || fail "[$ctx] a read-only open changed the file"
	must "$IMG" io -f vhdx -c 'read -P 0x3c 1M 64k' "$T/l.vhdx"
	cmp -s "$T/l.vhdx" "$T/l2.vhdx" && fail "[$ctx] a read-write open did not replay"
	must qemu-io -f vhdx -r -c 'read -P 0x3c 1M 64k' "$T/l.vhdx"
	qcheck "$T/l.vhdx" -f vhdx
}
img_writes() {
	ctx="img writes into qemu's"
	must qemu-img create -q -f vhdx -o block_size=1M "$T/w.vhdx" 16M
	must "$IMG" io -f vhdx -c 'write -P 0x11 0 64k' -c 'write -P 0x22 3M 1M' \
		-c flush -c 'write -P 0x33 9437000 5000' "$T/w.vhdx"
	qcheck "$T/w.vhdx" -f vhdx
	must qemu-io -f vhdx -r -c 'read -P 0x11 0 64k' -c 'read -P 0x22 3M 1M' \
		-c 'read -P 0x33 9437000 5000' -c 'read -P 0 1M 2M' "$T/w.vhdx"
	python3 - "$T/w.vhdx" <<'PY' || fail "[$ctx] headers"
import struct, sys
d = open(sys.argv[1], 'rb').read(192 * 1024)
seqs = []
for h in (64 * 1024, 128 * 1024):
    assert d[h:h + 4] == b'head'
    assert d[h + 48:h + 64] == bytes(16), 'log GUID not cleared'
    seqs.append(struct.unpack_from('<Q', d, h + 8)[0])
assert abs(seqs[0] - seqs[1]) == 1 and min(seqs) >= 4, seqs
PY
}

tcase block_sizes
tcase log_replay
tcase img_writes
finish
