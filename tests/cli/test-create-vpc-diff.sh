#!/bin/bash
# SPDX-License-Identifier: MIT
# VHD differencing disks: img create -f vpc -b parent.vhd makes a child with
# W2ru/W2ku parent locators; reads fall through to the parent sector by
# sector (partial-sector writes keep the parent's bytes around them), the
# chain survives moving both files to another directory (relative locator),
# info names the parent, convert flattens the chain, and a parent given as
# another format is refused.
. "$(dirname "$0")/functions.sh"
requires cmp
"$IMG" --help | grep -q '^Supported formats:.* vpc' || skip "no vpc driver"

mkdir -p "$T/a"
head -c 4194304 /dev/urandom >"$T/p.raw"
"$IMG" convert -q -f raw -O vpc -o force_size=on "$T/p.raw" "$T/a/parent.vhd" || fail "parent"
(cd "$T/a" && "$IMG" create -q -f vpc -b parent.vhd -F vpc child.vhd) || fail "create child"
"$IMG" info "$T/a/child.vhd" | grep -q '^backing file: parent.vhd' || fail "info names no parent"
"$IMG" io -c 'write -P 0x5a 1000 3000' -c 'write -P 0x6b 2097150 5' "$T/a/child.vhd" >/dev/null ||
	fail "child writes"
python3 - "$T/p.raw" <<'PY' || fail "expected image"
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[1000:4000] = b'\x5a' * 3000
d[2097150:2097155] = b'\x6b' * 5
open(sys.argv[1] + '.want', 'wb').write(d)
PY
mv "$T/a" "$T/b"
"$IMG" convert -f vpc -O raw "$T/b/child.vhd" "$T/flat.raw" || fail "convert child"
cmp "$T/flat.raw" "$T/p.raw.want" || fail "child reads wrong data"
"$IMG" check "$T/b/child.vhd" >/dev/null || fail "check child"
"$IMG" map "$T/b/child.vhd" | grep -q 'child.vhd' || fail "map shows no child data"
# Without the parent the child does not open.
rm "$T/b/parent.vhd"
expect_exit 1 "$IMG" convert -O raw "$T/b/child.vhd" "$T/x.raw"
grep -qi "parent.vhd" "$T/.err" || fail "no parent name in: $(cat "$T/.err")"
"$IMG" create -q -f qcow2 "$T/q.qcow2" 4M
expect_exit 1 "$IMG" create -q -f vpc -b "$T/q.qcow2" -F qcow2 "$T/c2.vhd"
grep -q "must be vpc" "$T/.err" || fail "qcow2 parent: $(cat "$T/.err")"
echo ok
