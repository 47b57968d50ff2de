#!/bin/bash
# SPDX-License-Identifier: MIT
# img commit on qcow2: messages and exit codes as qemu-img's (no backing,
# base not in the chain, bad options), the success message, -q, -d keeps the
# overlay, the default empties it and the base then holds its data.
. "$(dirname "$0")/functions.sh"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

"$IMG" create -q -f qcow2 b.qcow2 1M || fail "create base"
"$IMG" create -q -f qcow2 -b b.qcow2 -F qcow2 t.qcow2 2M || fail "create top"
"$IMG" io -c "write -P 0x5a 512k 1M" t.qcow2 >/dev/null || fail "write"

expect_exit 1 "$IMG" commit b.qcow2
grep -q "^img: Image does not have a backing file$" .err || fail "no-backing message"
expect_exit 1 "$IMG" commit -b nope t.qcow2
grep -q "^img: Did not find 'nope' in the backing chain of 't.qcow2'$" .err ||
	fail "missing-base message"
expect_exit 1 "$IMG" commit
expect_exit 1 "$IMG" commit -t bogus t.qcow2
grep -q "Invalid cache option: bogus" .err || fail "cache message"

cp t.qcow2 t.before
expect_exit 0 "$IMG" commit -d t.qcow2
grep -q "^Image committed.$" .out || fail "success message"
cmp -s t.qcow2 t.before || fail "-d changed the overlay"
"$IMG" io -c "read -P 0x5a 512k 1M" b.qcow2 >/dev/null || fail "base data after -d"
"$IMG" info b.qcow2 | grep -q "^virtual size: 2 MiB" || fail "base did not grow"

"$IMG" io -c "write -P 0x6b 0 4k" t.qcow2 >/dev/null || fail "write 2"
expect_exit 0 "$IMG" commit -q t.qcow2
[ -s .out ] && fail "-q printed: $(cat .out)"
"$IMG" map --output=json t.qcow2 | grep -q '"depth": 0' && fail "overlay not emptied"
"$IMG" io -c "read -P 0x6b 0 4k" -c "read -P 0x5a 512k 1M" t.qcow2 >/dev/null ||
	fail "overlay reads after commit"
"$IMG" check t.qcow2 >/dev/null || fail "check overlay"
"$IMG" check b.qcow2 >/dev/null || fail "check base"
exit 0
