#!/bin/bash
# SPDX-License-Identifier: MIT
# img resize on raw images: absolute and relative sizes, --shrink rules,
# messages and exit codes as qemu-img resize.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 1M
expect_exit 0 "$IMG" resize -f raw a.raw 2M
grep -q '^Image resized.$' "$T/.out" || fail "success message"
[ "$(stat -c %s a.raw)" = 2097152 ] || fail "grow to 2M"
expect_exit 0 "$IMG" resize -f raw a.raw +1M
[ "$(stat -c %s a.raw)" = 3145728 ] || fail "grow by 1M"
expect_exit 1 "$IMG" resize -f raw a.raw 1M
grep -q '^img: Use the --shrink option to perform a shrink operation.$' "$T/.err" || fail "shrink message"
grep -q "^img: warning: Shrinking an image will delete all data beyond the shrunken image's end." "$T/.err" || fail "shrink warning"
[ "$(stat -c %s a.raw)" = 3145728 ] || fail "refused shrink changed the file"
expect_exit 1 "$IMG" resize -f raw a.raw -1M
expect_exit 0 "$IMG" resize -f raw --shrink a.raw -1M
[ "$(stat -c %s a.raw)" = 2097152 ] || fail "shrink by 1M"
expect_exit 0 "$IMG" resize -f raw -q --shrink a.raw 1M
[ -s "$T/.out" ] && fail "-q printed output"
[ "$(stat -c %s a.raw)" = 1048576 ] || fail "shrink to 1M"
expect_exit 1 "$IMG" resize -f raw --shrink a.raw -- -2M
grep -q '^img: New image size must be positive$' "$T/.err" || fail "negative size message"
expect_exit 1 "$IMG" resize -f raw a.raw 1x
expect_exit 1 "$IMG" resize -f raw a.raw
expect_exit 1 "$IMG" resize a.raw
expect_exit 1 "$IMG" resize -f raw --preallocation=bad a.raw 2M
expect_exit 1 "$IMG" resize -f raw missing.raw 1M
expect_exit 0 "$IMG" resize -f raw --preallocation=falloc a.raw 2M
[ "$(stat -c %s a.raw)" = 2097152 ] || fail "falloc grow"
exit 0
