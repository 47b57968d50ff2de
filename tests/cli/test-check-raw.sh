#!/bin/bash
# SPDX-License-Identifier: MIT
# img check on raw: exit 63 with qemu-img's message; usage error exits.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

qemu-img create -q -f raw a.raw 1M
for o in human json; do
	expect_exit 63 "$IMG" check -f raw --output=$o a.raw
	grep -q '^img: This image format does not support checks$' "$T/.err" || fail "raw check message"
done
expect_exit 1 "$IMG" check missing.raw
expect_exit 1 "$IMG" check -r foo a.raw
grep -q "expecting 'leaks' or 'all'" "$T/.err" || fail "-r message"
expect_exit 1 "$IMG" check --output=xml a.raw
expect_exit 1 "$IMG" check
expect_exit 1 "$IMG" check -Z a.raw
exit 0
