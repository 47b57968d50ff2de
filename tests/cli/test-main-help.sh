#!/bin/bash
# SPDX-License-Identifier: MIT
# img --help / help / --version, per-command --help, unknown commands and
# options: exit codes and the one-line "img: ..." error shape.
. "$(dirname "$0")/functions.sh"

expect_exit 0 "$IMG" --help
cp "$T/.out" "$T/help"
grep -q '^usage: img ' "$T/help" || fail "--help has no usage line"
for c in create info check compare map measure resize dd io convert bench; do
	grep -q "^  $c " "$T/help" || fail "--help does not list $c"
	expect_exit 0 "$IMG" "$c" --help
	grep -q "usage: img $c" "$T/.out" || fail "$c --help has no usage"
done
expect_exit 0 "$IMG" help
expect_exit 0 "$IMG" help info
grep -q "usage: img info" "$T/.out" || fail "help info has no usage"
expect_exit 0 "$IMG" --version
grep -q '^img version ' "$T/.out" || fail "--version output"
expect_exit 1 "$IMG"
expect_exit 1 "$IMG" frobnicate
grep -q '^img: Command not found: frobnicate$' "$T/.err" || fail "unknown command message"
expect_exit 1 "$IMG" --frob
expect_exit 1 "$IMG" info --frob x
grep -q "^img: unrecognized option '--frob'" "$T/.err" || fail "bad option message"
expect_exit 1 "$IMG" info -f
exit 0
