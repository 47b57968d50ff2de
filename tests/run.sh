#!/bin/bash
# SPDX-License-Identifier: MIT
# Run every test: unit test binaries, fuzz corpus replays, CLI and interop
# scripts, up to N at a time (most tests wait on sleeps, servers and
# qemu-img, so more jobs than cores pays). Each test's output goes to
# $BUILD/test-logs/<name>.log and each runs with TMPDIR set to a fresh
# directory of its own (removed afterwards). Exit 0 = pass, 77 = skip (its
# reason is printed), anything else = fail; the PASS/FAIL lines print as tests
# finish. Unit tests run twice: as they are, and under tests/no-uring (named
# unit/test-x:no-uring). When any rbd test is selected, one throwaway Ceph
# cluster is started for all of them (tests/interop/rbd-lib.sh gives each
# test its own pool) and stopped at the end, even on failure or a signal. Ends with the 10 slowest
# tests, then the summary line "N passed, N failed, N skipped" (always the
# last line: .ci/run relies on it); exits non-zero on any failure.
# Tests start longest first, by the times of the previous run
# ($BUILD/test-logs/.durations).
# Usage: tests/run.sh [-j N] [BUILD_DIR] [PATTERN]
#   -j N  parallel tests (default $TEST_JOBS, else twice the number of cores)
top=$(cd "$(dirname "$0")/.." && pwd)
jobs=${TEST_JOBS:-}
while getopts j: opt; do
	case $opt in
	j) jobs=$OPTARG ;;
	*)
		echo "usage: $0 [-j N] [BUILD_DIR] [PATTERN]" >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
[ -n "$jobs" ] || jobs=$((2 * $(nproc)))
case "$jobs" in
'' | *[!0-9]* | 0)
	echo "run.sh: -j wants a positive number, not '$jobs'" >&2
	exit 2
	;;
esac
BUILD=${1:-build}
case "$BUILD" in /*) ;; *) BUILD=$top/$BUILD ;; esac
pattern=${2:-}
export BUILD
logs=$BUILD/test-logs
mkdir -p "$logs"
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
work=$(mktemp -d "${TMPDIR:-/tmp}/img-run.XXXXXX") || exit 1

names=() cmds=()
add() {
	local name=$1
	shift
	[ -n "$pattern" ] && [[ "$name" != *$pattern* ]] && return
	names+=("$name")
	cmds+=("$(printf '%q ' "$@")")
}

for t in "$BUILD"/tests/test-*; do
	[ -x "$t" ] || continue
	add "unit/${t##*/}" "$t"
done
# Every unit test again where io_uring is refused (tests/no-uring.c, as in
# a container), so the psync fallback behind IMG_IO_AUTO runs them all too.
for t in "$BUILD"/tests/test-*; do
	[ -x "$t" ] || continue
	add "unit/${t##*/}:no-uring" "$BUILD/tests/no-uring" "$t"
done
for t in "$BUILD"/tests/fuzz-*; do
	[ -x "$t" ] || continue
	n=${t##*/}
	# A missing corpus fails the replay: it must not pass on no input.
	add "fuzz-replay/$n" "$t" "$top/tests/fuzz/corpus/${n#fuzz-}"
done
for t in "$top"/tests/cli/test-*.sh "$top"/tests/interop/test-*.sh; do
	[ -f "$t" ] || continue
	d=${t%/*}
	n=${t##*/}
	add "${d##*/}/${n%.sh}" bash "$t"
done

# Longest first (by the times of the last run, unknown ones first), so that
# no long test starts last and runs alone.
durations=$logs/.durations
declare -A prev=()
if [ -f "$durations" ]; then
	while read -r secs n; do prev[$n]=$secs; done <"$durations"
	order=$(for i in "${!names[@]}"; do
		echo "${prev[${names[$i]}]:-1e9} $i"
	done | sort -s -k1,1gr | cut -d' ' -f2)
	sorted_names=() sorted_cmds=()
	for i in $order; do
		sorted_names+=("${names[$i]}")
		sorted_cmds+=("${cmds[$i]}")
	done
	names=("${sorted_names[@]}") cmds=("${sorted_cmds[@]}")
fi

# Running tests: subshell pid -> test index.
declare -A running=()
ceph_dir=""

stop_all() {
	local p
	for p in "${!running[@]}"; do
		# The subshell's child is timeout(1), which signals the test's group.
		pkill -TERM -P "$p" 2>/dev/null
	done
	wait 2>/dev/null
}

finish_run() {
	[ -n "$ceph_dir" ] && "$top/scripts/ceph-cluster.sh" stop "$ceph_dir"
	rm -rf --one-file-system "$work"
}
trap finish_run EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM HUP PIPE

# One cluster for every selected rbd test, when it can run here at all; a
# test that runs alone (or when this start fails) starts its own.
for n in "${names[@]}"; do
	[[ "$n" == interop/test-rbd-* ]] || continue
	if command -v ceph-mon >/dev/null && [ -x "$BUILD/img" ] &&
		! "$BUILD/img" info rbd:rbd/probe:conf=/nonexistent 2>&1 |
		grep -q "built without RBD support"; then
		if "$top/scripts/ceph-cluster.sh" start "$work/ceph" >"$logs/ceph-cluster.log" 2>&1; then
			ceph_dir=$work/ceph
			export IMG_TEST_CEPH_DIR=$ceph_dir
		else
			echo "note: the shared Ceph cluster did not start ($(tail -n1 "$logs/ceph-cluster.log")); each rbd test starts its own"
		fi
	fi
	break
done

echo "running ${#names[@]} tests, -j $jobs (TEST_TIMEOUT=${TEST_TIMEOUT}s)"

launch() {
	local i=$1 log=$logs/${names[$1]}.log
	mkdir -p "$(dirname "$log")" "$work/$i"
	(
		start=$EPOCHREALTIME
		cd "$top" && TMPDIR=$work/$i timeout -k 10 "$TEST_TIMEOUT" \
			bash -c "exec ${cmds[$i]}" >"$log" 2>&1 </dev/null
		rc=$?
		echo "$rc $start $EPOCHREALTIME" >"$work/$i.rc"
	) 2>/dev/null &
	running[$!]=$i
}

pass=0 failn=0 skipn=0 xfail=0
failed=() times=()

report() {
	local i=$1 name=${names[$1]} rc start end secs
	local log=$logs/$name.log
	read -r rc start end <"$work/$i.rc" 2>/dev/null || rc=255 start=0 end=0
	rm -rf --one-file-system "$work/$i" "$work/$i.rc"
	secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	times+=("$secs $name")
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

run_start=$EPOCHREALTIME
next=0
while [ $next -lt ${#names[@]} ] || [ ${#running[@]} -gt 0 ]; do
	if [ $next -lt ${#names[@]} ] && [ ${#running[@]} -lt "$jobs" ]; then
		launch $next
		next=$((next + 1))
		continue
	fi
	done_pid=""
	wait -n -p done_pid "${!running[@]}"
	[ -n "$done_pid" ] || continue
	i=${running[$done_pid]}
	unset "running[$done_pid]"
	report "$i"
done

for t in "${times[@]}"; do prev[${t#* }]=${t%% *}; done
for n in "${!prev[@]}"; do echo "${prev[$n]} $n"; done >"$durations"
if [ ${#times[@]} -gt 0 ]; then
	echo "slowest tests (wall time $(awk -v a="$run_start" -v b="$EPOCHREALTIME" \
		'BEGIN { printf "%.0f", b - a }') s, -j $jobs):"
	printf '%s\n' "${times[@]}" | sort -rn | head -n 10 |
		awk '{ printf "  %7.1fs %s\n", $1, $2 }'
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}"
fi
[ $xfail -gt 0 ] && echo "$xfail known failures (tests/known-failures)"
echo "$pass passed, $failn failed, $skipn skipped"
[ $failn -eq 0 ]
