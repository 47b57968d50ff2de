#!/bin/bash
# SPDX-License-Identifier: MIT
# Run every test: unit test binaries, fuzz corpus replays, CLI and interop
# scripts. Each test's output goes to $BUILD/test-logs/<name>.log. Exit 0 = pass,
# 77 = skip (its reason is printed), anything else = fail. Ends with the summary
# line "N passed, N failed, N skipped"; exits non-zero on any failure.
# Usage: tests/run.sh [BUILD_DIR] [PATTERN]
top=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD=$top/$BUILD ;; esac
pattern=${2:-}
export BUILD
logs=$BUILD/test-logs
mkdir -p "$logs"
pass=0 failn=0 skipn=0 xfail=0
failed=()
TEST_TIMEOUT=${TEST_TIMEOUT:-300}

run_one() {
	local name=$1
	shift
	[ -n "$pattern" ] && [[ "$name" != *$pattern* ]] && return
	local log=$logs/$name.log start end rc
	mkdir -p "$(dirname "$log")"
	start=$EPOCHREALTIME
	(cd "$top" && timeout -k 10 "$TEST_TIMEOUT" "$@") >"$log" 2>&1 </dev/null
	rc=$?
	end=$EPOCHREALTIME
	local secs
	secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	case $rc in
	0)
		pass=$((pass + 1))
		printf 'PASS %-45s %6ss\n' "$name" "$secs"
		;;
	77)
		skipn=$((skipn + 1))
		printf 'SKIP %-45s %s\n' "$name" "$(grep -m1 -i skip "$log" || tail -n1 "$log")"
		;;
	*)
		if grep -qx "$name" "$top/tests/known-failures" 2>/dev/null; then
			xfail=$((xfail + 1))
			printf 'XFAIL %-44s (known, see tests/known-failures)\n' "$name"
			return
		fi
		failn=$((failn + 1))
		failed+=("$name")
		printf 'FAIL %-45s (exit %d, log %s)\n' "$name" "$rc" "$log"
		tail -n 15 "$log" | sed 's/^/     | /'
		;;
	esac
}

for t in "$BUILD"/tests/test-*; do
	[ -x "$t" ] || continue
	run_one "unit/$(basename "$t")" "$t"
done
for t in "$BUILD"/tests/fuzz-*; do
	[ -x "$t" ] || continue
	n=$(basename "$t")
	corpus=$top/tests/fuzz/corpus/${n#fuzz-}
	[ -d "$corpus" ] || corpus=/dev/null
	run_one "fuzz-replay/$n" "$t" "$corpus"
done
for t in "$top"/tests/cli/test-*.sh "$top"/tests/interop/test-*.sh; do
	[ -f "$t" ] || continue
	run_one "$(basename "$(dirname "$t")")/$(basename "$t" .sh)" bash "$t"
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
fi
[ $xfail -gt 0 ] && echo "$xfail known failures (tests/known-failures)"
echo "$pass passed, $failn failed, $skipn skipped"
[ $failn -eq 0 ]
