#!/bin/bash
# SPDX-License-Identifier: MIT
# img create -f raw: the "Formatting" line and the file match qemu-img's;
# size suffixes; error exits (no size, bad size, unknown format or option).
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

while IFS="|" read -r opts size; do
	args="$opts $size"
	rm -f a.raw b.raw
	# shellcheck disable=SC2086
	"$IMG" create -f raw $opts a.raw $size >img.out 2>&1 || fail "create $args"
	# shellcheck disable=SC2086
	qemu-img create -f raw $opts b.raw $size >q.out 2>&1 || fail "qemu-img $args"
	sed -i 's/b\.raw/a.raw/' q.out
	diff -u q.out img.out || fail "Formatting line differs for: $args"
	[ "$(stat -c %s a.raw)" = "$(stat -c %s b.raw)" ] || fail "size for $args"
done <<CASES
|1M
|1.5M
|4096
|1000
-o preallocation=off|1G
-o size=2M|
CASES
"$IMG" create c.raw 64k >/dev/null || fail "default format"
[ "$(stat -c %s c.raw)" = 65536 ] || fail "default format size"
expect_exit 0 "$IMG" create -q d.raw 1M
[ -s "$T/.out" ] && fail "-q printed output"

expect_exit 1 "$IMG" create -f raw e.raw
grep -q "^img: e.raw: Image creation needs a size parameter$" "$T/.err" || fail "no-size message"
expect_exit 1 "$IMG" create -f raw e.raw 1x
grep -q "^img: Invalid image size specified" "$T/.err" || fail "bad size message"
expect_exit 1 "$IMG" create -f raw e.raw -- -1
expect_exit 1 "$IMG" create -f nosuchfmt e.raw 1M
expect_exit 1 "$IMG" create -f raw -o bogus=1 e.raw 1M
grep -q "Invalid parameter 'bogus'" "$T/.err" || fail "bad -o message"
expect_exit 1 "$IMG" create -f raw e.raw 1M extra
expect_exit 1 "$IMG" create -Z e.raw 1M
expect_exit 1 "$IMG" create -f raw /nonexistent-dir/e.raw 1M
expect_exit 0 "$IMG" create -f raw -o help
grep -q "^Supported raw options:" "$T/.out" || fail "-o help"
grep -q "size=" "$T/.out" || fail "-o help lists size"
[ -e e.raw ] && fail "a failed create left a file"
exit 0
