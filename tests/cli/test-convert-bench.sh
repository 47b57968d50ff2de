#!/bin/bash
# SPDX-License-Identifier: MIT
# img bench: qemu-img bench's output lines and option checks, and that a write
# run really writes its pattern where the requests go (checked with qemu-io).
. "$(dirname "$0")/functions.sh"
requires qemu-io
cd "$T" || exit 1

truncate -s 4M d.raw
expect_exit 0 "$IMG" bench -c 100 -f raw d.raw
grep -qx 'Sending 100 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)' "$T/.out" ||
	{ cat "$T/.out"; fail "read header"; }
grep -qE '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' "$T/.out" || fail "no run line"

expect_exit 0 "$IMG" bench -w -c 64 -d 8 -s 4k -S 64k -o 8k --pattern=0xab \
	--flush-interval=16 -f raw d.raw
grep -q '^Sending flush every 16 requests$' "$T/.out" || fail "no flush line"
qemu-io -f raw -c 'read -P 0xab 8k 4k' -c 'read -P 0xab 4005888 4k' \
	-c 'read -P 0 12k 4k' d.raw | grep -qi 'pattern' && fail "pattern not written"
qemu-io -f raw -c 'read -P 0xab 8k 4k' d.raw | grep -q 'read 4096/4096' || fail "read back"

expect_exit 0 "$IMG" bench -w --random -c 200 -f raw --pattern=1 d.raw
grep -q 'random offsets' "$T/.out" || fail "--random header"

expect_exit 1 "$IMG" bench --flush-interval=10 d.raw
grep -q 'only available in write tests' "$T/.err" || fail "flush without -w"
expect_exit 1 "$IMG" bench -w -d 64 --flush-interval=10 d.raw
grep -q "can't be smaller than depth" "$T/.err" || fail "interval < depth"
expect_exit 1 "$IMG" bench -c -1 d.raw
expect_exit 1 "$IMG" bench -o 4M -c 1 -f raw d.raw
grep -q 'Failed request' "$T/.err" || fail "request past the end"
exit 0
