#!/bin/bash
# SPDX-License-Identifier: MIT
# img info on raw images: human and JSON output identical to qemu-img info,
# including JSON string escaping; error exits.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 1536k
qemu-io -f raw -c 'write -P 1 64k 64k' a.raw >/dev/null
truncate -s 3G big.raw
name=$(printf 'we"i\\rd\tname\001\xc3\xbc.raw')
qemu-img create -q -f raw "$name" 1M
for f in a.raw big.raw "$name"; do
	for o in human json; do
		"$IMG" info -f raw --output=$o "$f" >img.out 2>&1 || fail "info $f $o"
		qemu-img info -f raw --output=$o "$f" >q.out 2>&1
		diff -u q.out img.out || fail "info --output=$o $f differs"
	done
	"$IMG" info --output=json "$f" >img.out || fail "probed info $f"
	qemu-img info --output=json "$f" >q.out
	diff -u q.out img.out || fail "probed info differs for $f"
done
expect_exit 1 "$IMG" info missing.raw
grep -q "^img: Could not open 'missing.raw'" "$T/.err" || fail "missing file message"
expect_exit 1 "$IMG" info --output=xml a.raw
grep -q "^img: --output must be used with human or json as argument.$" "$T/.err" || fail "--output message"
expect_exit 1 "$IMG" info
expect_exit 1 "$IMG" info a.raw a.raw
expect_exit 1 "$IMG" info -f nosuchfmt a.raw
exit 0
