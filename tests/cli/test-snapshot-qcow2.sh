#!/bin/bash
# SPDX-License-Identifier: MIT
# img snapshot beyond the listing (interop tests cover that): -l
# --output=json, --diff between two snapshots and between a snapshot and
# the live image, convert -l (a name, snapshot.id=, snapshot.name=), and
# convert --snapshots, whose output must hold every snapshot with its
# contents and share the clusters that did not change (so it is no bigger
# than the source).
. "$(dirname "$0")/functions.sh"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

io() { "$IMG" io -f "$1" -c "$2" "$3" >/dev/null || fail "img io $2 on $3"; }

"$IMG" create -q -f qcow2 s.qcow2 8M || fail create
io qcow2 "write -P 1 0 2M" s.qcow2
"$IMG" snapshot -c a s.qcow2 || fail "snapshot -c a"
io qcow2 "write -P 2 1M 64k" s.qcow2
io qcow2 "write -z 3M 64k" s.qcow2
"$IMG" snapshot -c b s.qcow2 || fail "snapshot -c b"
io qcow2 "write -P 3 5M 128k" s.qcow2

"$IMG" snapshot -l --output=json s.qcow2 >l.json || fail "-l --output=json"
[ "$(grep -c '"name"' l.json)" = 2 ] || fail "-l json: $(cat l.json)"
grep -q '"name": "b"' l.json || fail "-l json lacks b"
grep -q '"vm-state-size": 0' l.json || fail "-l json lacks vm-state-size"

"$IMG" snapshot --diff a b s.qcow2 --output=json | tr -d ' \n' >d.json ||
	fail "--diff a b"
[ "$(cat d.json)" = '[{"length":65536,"start":1048576},{"length":65536,"start":3145728}]' ] ||
	fail "--diff a b: $(cat d.json)"
"$IMG" snapshot --diff b s.qcow2 --output=json | tr -d ' \n' >d2.json ||
	fail "--diff b live"
[ "$(cat d2.json)" = '[{"length":131072,"start":5242880}]' ] ||
	fail "--diff b live: $(cat d2.json)"
expect_exit 1 "$IMG" snapshot --diff a nope s.qcow2
expect_exit 1 "$IMG" snapshot --diff -l s.qcow2

# convert -l, three spellings
"$IMG" convert -l a -O raw s.qcow2 a.raw || fail "convert -l a"
io raw "read -P 1 0 2M" a.raw
io raw "read -P 0 2M 6M" a.raw
"$IMG" convert -l snapshot.name=b -O raw s.qcow2 b.raw || fail "convert -l snapshot.name=b"
"$IMG" convert -l snapshot.id=2 -O raw s.qcow2 b2.raw || fail "convert -l snapshot.id=2"
cmp b.raw b2.raw || fail "snapshot.id=2 and snapshot.name=b differ"
io raw "read -P 2 1M 64k" b.raw
io raw "read -P 0 3M 64k" b.raw
expect_exit 1 "$IMG" convert -l nope -O raw s.qcow2 x.raw
grep -q "not found" .err || fail "convert -l nope: $(cat .err)"
expect_exit 1 "$IMG" convert -l a -O raw s.qcow2 s.qcow2 x.raw
expect_exit 1 "$IMG" convert -l snapshot.bogus=1 -O raw s.qcow2 x.raw

# convert --snapshots
"$IMG" convert --snapshots -O qcow2 s.qcow2 o.qcow2 || fail "convert --snapshots"
"$IMG" check o.qcow2 >/dev/null || fail "check of the --snapshots output"
"$IMG" snapshot -l o.qcow2 | awk 'NR > 2 { print $2 }' >names
[ "$(tr '\n' ' ' <names)" = "a b " ] || fail "--snapshots names: $(cat names)"
for sn in a b; do
	"$IMG" convert -l "$sn" -O raw o.qcow2 "o-$sn.raw" || fail "convert -l $sn of the copy"
done
cmp a.raw o-a.raw || fail "snapshot a differs in the copy"
cmp b.raw o-b.raw || fail "snapshot b differs in the copy"
"$IMG" compare s.qcow2 o.qcow2 >/dev/null || fail "live image differs in the copy"
[ "$(stat -c %s o.qcow2)" -le "$(stat -c %s s.qcow2)" ] ||
	fail "--snapshots output is bigger than the source: clusters not shared"
expect_exit 1 "$IMG" convert --snapshots -O raw s.qcow2 x.raw
exit 0
