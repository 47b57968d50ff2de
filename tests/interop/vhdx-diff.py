#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Makes a differencing VHDX fixture straight from MS-VHDX (v1.0, sections 2.2
# to 2.6), independent of img's C code: a dynamic parent and a differencing
# child whose blocks are absent (read through the parent), fully present,
# partially present (a sector bitmap block marks which sectors are the
# child's), and zero; plus the raw bytes each must read as. qemu-img 7.2
# cannot make or read differencing VHDX, so this is the only peer.
# Usage: vhdx-diff.py DIR LOGICAL_SECTOR_SIZE
# writes DIR/p/parent.vhdx, DIR/c/child.vhdx (parent located by
# relative_path ..\p\parent.vhdx), DIR/parent.raw, DIR/child.raw.
import os
import random
import struct
import sys
import uuid

KIB, MIB = 1024, 1024 * 1024
BLOCK = MIB
VSIZE = 12 * MIB

GUID_BAT = uuid.UUID('2DC27766-F623-4200-9D64-115E9BFD4A08')
GUID_META = uuid.UUID('8B7CA206-4790-4B9A-B8FE-575F050F886E')
GUID_FILE_PARAMS = uuid.UUID('CAA16737-FA36-4D43-B3B6-33F0AA44E76B')
GUID_VSIZE = uuid.UUID('2FA54224-CD1B-4876-B211-5DBED83BF4B8')
GUID_DISK_ID = uuid.UUID('BECA12AB-B2E6-4523-93EF-C309E000C746')
GUID_LSECTOR = uuid.UUID('8141BF1D-A96F-4709-BA47-F233A8FAAB5F')
GUID_PSECTOR = uuid.UUID('CDA348C7-445D-4471-9CC9-E9885251C556')
GUID_PARENT = uuid.UUID('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C')
GUID_VHDX_LOCATOR = uuid.UUID('B04AEFB7-D19E-4A81-B789-25B8E9445913')

NOT_PRESENT, ZERO, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 2, 6, 7
SB_PRESENT = 6


def crc32c(buf, csum_off):
    b = bytearray(buf)
    b[csum_off:csum_off + 4] = bytes(4)
    c = 0xffffffff
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
    return (~c) & 0xffffffff


def utf16(s):
    return s.encode('utf-16-le')


def make(path, lsector, blocks, data_write_guid, locator=None):
    """blocks: {index: (state, bytes of BLOCK or None)}; for partially
    present blocks also the sector bitmap: (state, data, present_sectors)."""
    ratio = (1 << 23) * lsector // BLOCK
    n_blocks = (VSIZE + BLOCK - 1) // BLOCK
    if locator:
        n_entries = ((n_blocks + ratio - 1) // ratio) * (ratio + 1)
    else:
        n_entries = n_blocks + (n_blocks - 1) // ratio
    log_off, log_len = MIB, MIB
    bat_off, bat_len = 2 * MIB, MIB
    meta_off = 3 * MIB
    data_off = 4 * MIB
    assert n_entries * 8 <= bat_len
    f = bytearray(data_off)

    f[0:8] = b'vhdxfile'
    creator = utf16('vhdx-diff.py')
    f[8:8 + len(creator)] = creator
    file_write_guid = uuid.uuid4()
    for i, off in enumerate((64 * KIB, 128 * KIB)):
        h = bytearray(4 * KIB)
        h[0:4] = b'head'
        struct.pack_into('<Q', h, 8, 10 + i)
        h[16:32] = file_write_guid.bytes_le
        h[32:48] = data_write_guid.bytes_le
        # LogGuid zero: no log to replay.
        struct.pack_into('<HHIQ', h, 64, 0, 1, log_len, log_off)
        struct.pack_into('<I', h, 4, crc32c(h, 4))
        f[off:off + len(h)] = h
    r = bytearray(64 * KIB)
    r[0:4] = b'regi'
    struct.pack_into('<I', r, 8, 2)
    r[16:32] = GUID_BAT.bytes_le
    struct.pack_into('<QII', r, 32, bat_off, bat_len, 1)
    r[48:64] = GUID_META.bytes_le
    struct.pack_into('<QII', r, 64, meta_off, MIB, 1)
    struct.pack_into('<I', r, 4, crc32c(r, 4))
    f[192 * KIB:256 * KIB] = r
    f[256 * KIB:320 * KIB] = r

    # Metadata: table, then the items from 64 KiB on.
    m = bytearray(MIB)
    m[0:8] = b'metadata'
    items = [
        (GUID_FILE_PARAMS, struct.pack('<II', BLOCK, 2 if locator else 0), 4),
        (GUID_VSIZE, struct.pack('<Q', VSIZE), 6),
        (GUID_DISK_ID, uuid.uuid4().bytes_le, 6),
        (GUID_LSECTOR, struct.pack('<I', lsector), 6),
        (GUID_PSECTOR, struct.pack('<I', 4096), 6),
    ]
    if locator:
        kv = [(utf16(k), utf16(v)) for k, v in locator]
        body = bytearray(GUID_VHDX_LOCATOR.bytes_le +
                         struct.pack('<HH', 0, len(kv)))
        strings = bytearray()
        base = 20 + 12 * len(kv)
        for k, v in kv:
            ko = base + len(strings)
            strings += k
            vo = base + len(strings)
            strings += v
            body += struct.pack('<IIHH', ko, vo, len(k), len(v))
        items.append((GUID_PARENT, bytes(body + strings), 4))
    struct.pack_into('<H', m, 10, len(items))
    item_off = 64 * KIB
    for i, (guid, data, flags) in enumerate(items):
        e = 32 + 32 * i
        m[e:e + 16] = guid.bytes_le
        struct.pack_into('<III', m, e + 16, item_off, len(data), flags)
        m[item_off:item_off + len(data)] = data
        item_off += (len(data) + 7) // 8 * 8
    f[meta_off:meta_off + MIB] = m

    # Blocks after the metadata, a sector bitmap block where needed.
    bat = [0] * n_entries
    tail = bytearray()
    bitmaps = {}
    for b in sorted(blocks):
        state, data = blocks[b][0], blocks[b][1]
        idx = b + b // ratio
        off = 0
        if state in (FULLY_PRESENT, PARTIALLY_PRESENT):
            off = data_off + len(tail)
            tail += data
        bat[idx] = (off // MIB) << 20 | state
        if state == PARTIALLY_PRESENT:
            chunk = b // ratio
            bm = bitmaps.setdefault(chunk, bytearray(MIB))
            first = (b % ratio) * (BLOCK // lsector)
            for sec in blocks[b][2]:
                bit = first + sec
                bm[bit // 8] |= 1 << (bit % 8)
    for chunk, bm in bitmaps.items():
        off = data_off + len(tail)
        tail += bm
        bat[chunk * (ratio + 1) + ratio] = (off // MIB) << 20 | SB_PRESENT
    f[bat_off:bat_off + 8 * n_entries] = struct.pack('<%dQ' % n_entries,
                                                     *bat)
    with open(path, 'wb') as out:
        out.write(f + tail)


def main():
    d, lsector = sys.argv[1], int(sys.argv[2])
    rng = random.Random(7 + lsector)
    os.makedirs(d + '/p', exist_ok=True)
    os.makedirs(d + '/c', exist_ok=True)

    def rand(n):
        return rng.randbytes(n)

    # Parent: blocks 0-7 data but 2 (absent) and 6 (zero); 8-11 absent.
    parent = {}
    p_raw = bytearray(VSIZE)
    for b in range(8):
        if b == 2:
            continue
        if b == 6:
            parent[b] = (ZERO, None)
            continue
        data = rand(BLOCK)
        parent[b] = (FULLY_PRESENT, data)
        p_raw[b * BLOCK:(b + 1) * BLOCK] = data
    p_guid = uuid.uuid4()
    make(d + '/p/parent.vhdx', lsector, parent, p_guid)

    # Child: 0 absent (parent's), 1 fully present, 2 partially present over
    # the parent's hole, 3 partially present over parent data (sectors in
    # runs across bitmap bytes, the first and the last), 4 zero over parent
    # data, 5 partially present with no sector present, 9 fully present
    # past the parent's data, the rest absent.
    spb = BLOCK // lsector
    child = {}
    c_raw = bytearray(p_raw)
    for b, state in ((1, FULLY_PRESENT), (9, FULLY_PRESENT)):
        data = rand(BLOCK)
        child[b] = (state, data)
        c_raw[b * BLOCK:(b + 1) * BLOCK] = data
    child[4] = (ZERO, None)
    c_raw[4 * BLOCK:5 * BLOCK] = bytes(BLOCK)
    for b, secs in ((2, [0, 1, 2, 7, 8, 9, 100]),
                    (3, [0] + list(range(5, 21)) + [spb // 2, spb - 1]),
                    (5, [])):
        data = rand(BLOCK)
        child[b] = (PARTIALLY_PRESENT, data, secs)
        for s in secs:
            o = b * BLOCK + s * lsector
            c_raw[o:o + lsector] = data[s * lsector:(s + 1) * lsector]
    make(d + '/c/child.vhdx', lsector, child, uuid.uuid4(), locator=[
        ('parent_linkage', '{%s}' % str(p_guid).lower()),
        ('relative_path', '..\\p\\parent.vhdx'),
        ('absolute_win32_path', '\\\\?\\C:\\nowhere\\parent.vhdx'),
    ])
    with open(d + '/parent.raw', 'wb') as out:
        out.write(p_raw)
    with open(d + '/child.raw', 'wb') as out:
        out.write(c_raw)


main()
