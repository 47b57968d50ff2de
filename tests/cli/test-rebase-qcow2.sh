#!/bin/bash
# SPDX-License-Identifier: MIT
# img rebase on qcow2: qemu-img 7.2's refusals (no -b without -u, no -F with
# -b, unknown format, missing new backing) leave the image as it was; safe
# rebase onto another file and -b "" keep what the image reads; -u only
# rewrites the name (the old backing may be gone).
. "$(dirname "$0")/functions.sh"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

"$IMG" create -q -f qcow2 a.qcow2 1M || fail "create a"
"$IMG" io -c "write -P 0x11 0 1M" a.qcow2 >/dev/null || fail "write a"
"$IMG" create -q -f qcow2 -o cluster_size=4k n.qcow2 512k || fail "create n"
"$IMG" io -c "write -P 0x11 0 256k" -c "write -P 0x22 256k 256k" n.qcow2 >/dev/null
"$IMG" create -q -f qcow2 -o cluster_size=512 -b a.qcow2 -F qcow2 t.qcow2 1M
"$IMG" io -c "write -P 0x33 100k 8k" t.qcow2 >/dev/null || fail "write t"
"$IMG" convert -O raw t.qcow2 ref.raw || fail "reference"
cp t.qcow2 t.before

expect_exit 1 "$IMG" rebase t.qcow2
grep -q "Must specify backing file (-b) or use unsafe mode (-u)" .err || fail "no -b message"
expect_exit 1 "$IMG" rebase -b n.qcow2 t.qcow2
grep -q "^img: Could not change the backing file to 'n.qcow2': backing format must be specified$" .err ||
	fail "no -F message"
expect_exit 1 "$IMG" rebase -b n.qcow2 -F nosuch t.qcow2
grep -q "^img: Invalid format name: 'nosuch'$" .err || fail "format message"
expect_exit 1 "$IMG" rebase -b gone.qcow2 -F qcow2 t.qcow2
grep -q "Could not open new backing file 'gone.qcow2'" .err || fail "open message"
cmp -s t.qcow2 t.before || fail "a refused rebase changed the image"

expect_exit 0 "$IMG" rebase -b n.qcow2 -F qcow2 t.qcow2
[ -s .out ] && fail "rebase printed: $(cat .out)"
"$IMG" info t.qcow2 | grep -q "^backing file: n.qcow2$" || fail "new name"
"$IMG" compare t.qcow2 ref.raw >/dev/null || fail "contents after safe rebase"
"$IMG" check t.qcow2 >/dev/null || fail "check after safe rebase"
# Only the differing part was copied: the first 256k reads from n.
"$IMG" map --output=json t.qcow2 | grep -q '"start": 0, "length": 102400, "depth": 1' ||
	fail "equal range copied"

expect_exit 0 "$IMG" rebase -b "" t.qcow2
"$IMG" info t.qcow2 | grep -q "^backing file" && fail "backing left"
"$IMG" compare t.qcow2 ref.raw >/dev/null || fail "contents after -b ''"

mv a.qcow2 moved.qcow2
cp t.before t.qcow2
expect_exit 0 "$IMG" rebase -u -b moved.qcow2 -F qcow2 t.qcow2
"$IMG" compare t.qcow2 ref.raw >/dev/null || fail "contents after -u"
expect_exit 0 "$IMG" rebase -u t.qcow2
"$IMG" info t.qcow2 | grep -q "^backing file" && fail "-u without -b left a backing"
exit 0
