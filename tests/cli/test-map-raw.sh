#!/bin/bash
# SPDX-License-Identifier: MIT
# img map on raw images: human and JSON output identical to qemu-img map,
# with --start-offset/--max-length; error exits.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 4M
qemu-io -f raw -c 'write -P 1 0 64k' -c 'write -P 2 1M 128k' -c 'write 3M 4k' a.raw >/dev/null
truncate -s 1M hole.raw
for f in a.raw hole.raw; do
	for o in human json; do
		for range in "" "--start-offset=1M" "--start-offset=64k --max-length=1M" \
			"--max-length=4k" "--start-offset=8M"; do
			# shellcheck disable=SC2086
			"$IMG" map -f raw --output=$o $range $f >img.out 2>&1 || fail "map $o $range $f"
			# shellcheck disable=SC2086
			qemu-img map -f raw --output=$o $range $f >q.out 2>&1
			diff -u q.out img.out || fail "map --output=$o $range $f differs"
		done
	done
done
expect_exit 1 "$IMG" map missing.raw
expect_exit 1 "$IMG" map --output=xml a.raw
expect_exit 1 "$IMG" map --start-offset=1x a.raw
grep -q "^img: Invalid start offset specified" "$T/.err" || fail "start offset message"
expect_exit 1 "$IMG" map
exit 0
