#!/bin/bash
# SPDX-License-Identifier: MIT
# Differencing VHDX (qemu-img 7.2 cannot make or read one): fixtures from
# tests/interop/vhdx-diff.py, written from MS-VHDX without img's code, for
# 512 and 4096-byte logical sectors. qemu-img reads the dynamic parent as
# the generator meant (a check on the generator); img reads the child
# exactly as expected: blocks absent (the parent's data), fully present,
# partially present (sector bitmap runs across bytes, first and last
# sector, none) over parent data and over a parent hole, and zero over
# parent data, through `img convert` to raw + qemu-img compare, img
# compare and qemu-io style reads; img map names the child or the parent
# per sector run. Then: a missing parent fails cleanly, a parent locator
# of another type is refused, and writes to a differencing disk are
# refused.
. "$(dirname "$0")/interop-lib.sh"
need_format vhdx
requires python3

diff_reads() {
	local ls=$1 d=$T/d$1
	ctx="lsector $ls"
	must python3 "$(dirname "$0")/vhdx-diff.py" "$d" "$ls"
	if [ "$ls" = 512 ]; then # qemu-img 7.2 refuses 4096-byte sectors
		must qemu-img compare -q -f vhdx -F raw "$d/p/parent.vhdx" "$d/parent.raw"
		qcheck "$d/p/parent.vhdx" -f vhdx
	fi
	must "$IMG" convert -O raw "$d/c/child.vhdx" "$d/out.raw"
	must qemu-img compare -q -f raw -F raw "$d/out.raw" "$d/child.raw"
	cmp "$d/out.raw" "$d/child.raw" || fail "[$ctx] child reads wrong"
	must "$IMG" compare "$d/c/child.vhdx" "$d/child.raw"
	must "$IMG" check "$d/c/child.vhdx"
	# Unaligned reads across present/absent sector runs.
	local r='read -v 3145900 20000'
	cmp <("$IMG" io -f vhdx -r -c "$r" "$d/c/child.vhdx" | grep -v '^read\|ops/sec') \
		<(qemu-io -f raw -r -c "$r" "$d/child.raw" | grep -v '^read\|ops/sec') ||
		fail "[$ctx] unaligned read"
	"$IMG" info "$d/c/child.vhdx" >"$T/info" 2>&1 || fail "[$ctx] info"
	grep -q '^backing file: \.\./p/parent\.vhdx' "$T/info" || fail "[$ctx] info: $(cat "$T/info")"
	# Map: block 3 alternates between the child and the parent.
	"$IMG" map --output=json "$d/c/child.vhdx" >"$T/map" || fail "[$ctx] map"
	python3 - "$T/map" "$ls" <<'PY' || fail "[$ctx] map: $(cat "$T/map")"
import json, sys
m, ls = json.load(open(sys.argv[1])), int(sys.argv[2])
M = 1 << 20
def at(off):
    return next(e for e in m if e['start'] <= off < e['start'] + e['length'])
assert at(3 * M)['depth'] == 0 and at(3 * M)['length'] == ls
assert at(3 * M + ls)['depth'] == 1
assert at(3 * M + 5 * ls)['depth'] == 0 and at(3 * M + 5 * ls)['length'] == 16 * ls
assert at(4 * M)['zero'] and at(4 * M)['depth'] == 0
assert at(5 * M)['depth'] == 1 and at(5 * M)['data']
assert at(9 * M)['depth'] == 0 and at(9 * M)['data']
PY
}

diff_errors() {
	local d=$T/d512
	ctx="errors"
	cp "$d/c/child.vhdx" "$T/before.vhdx"
	expect_exit 1 "$IMG" io -f vhdx -c 'write -P 1 0 512' "$d/c/child.vhdx"
	cmp "$d/c/child.vhdx" "$T/before.vhdx" || fail "[$ctx] a refused write changed the file"
	mv "$d/p/parent.vhdx" "$d/p/gone.vhdx"
	expect_exit 1 "$IMG" convert -O raw "$d/c/child.vhdx" "$T/y.raw"
	[ "$(wc -l <"$T/.err")" = 1 ] || fail "[$ctx] missing parent: $(cat "$T/.err")"
	mv "$d/p/gone.vhdx" "$d/p/parent.vhdx"
	# A parent locator of another type (not VHDX) is refused.
	python3 - "$T/before.vhdx" <<'PY' || fail "[$ctx] patching the locator"
import struct, sys
f = open(sys.argv[1], 'r+b')
M = 1 << 20
f.seek(3 * M + 32 + 32 * 5 + 16)
off = struct.unpack('<I', f.read(4))[0]
f.seek(3 * M + off)
f.write(b'\0' * 16)
PY
	expect_exit 1 "$IMG" info "$T/before.vhdx"
	grep -q "not of the VHDX type" "$T/.err" || fail "[$ctx] locator type: $(cat "$T/.err")"
}

tcase diff_reads 512
tcase diff_reads 4096
tcase diff_errors
finish
