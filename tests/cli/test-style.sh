#!/bin/bash
# SPDX-License-Identifier: MIT
# Style gate: every tracked C file is clang-format clean (make check-format)
# and the include rules between lib/, formats/ and tools/ hold (make
# check-deps). Fails listing the offending files.
. "$(dirname "$0")/functions.sh"
requires clang-format git make
git -C "$top" rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout (check-format lists files with git)"

rc=0
if ! make -s -C "$top" --no-print-directory check-format >"$T/format" 2>&1; then
	echo "check-format: these files are not clang-format clean:"
	grep -o '^[^:]*\.[ch]:' "$T/format" | sort -u | sed 's/:$//; s/^/  /'
	head -n 40 "$T/format"
	rc=1
fi
if ! make -s -C "$top" --no-print-directory check-deps >"$T/deps" 2>&1; then
	echo "check-deps: include rules violated:"
	cat "$T/deps"
	rc=1
fi
[ $rc = 0 ] || fail "style violations"
echo "style: ok"
