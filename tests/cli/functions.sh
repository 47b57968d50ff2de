# SPDX-License-Identifier: MIT
# Sourced by every shell test (tests/cli, tests/interop). Provides:
#   $IMG $IMG_NBD $IMG_FUSE  the binaries under test (from $BUILD, default build)
#   $T                       a fresh temp dir, removed on exit
#   requires CMD...          skip (exit 77, reason printed) unless each CMD exists
#   fail MSG                 print MSG and exit 1
#   expect_exit CODE CMD...  run CMD, fail unless it exits with CODE
#   at_exit CMD              run CMD on exit (before the temp dir goes)
set -u
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$top/build}
case "$BUILD" in /*) ;; *) BUILD=$top/$BUILD ;; esac
IMG=$BUILD/img
IMG_NBD=$BUILD/img-nbd
IMG_FUSE=$BUILD/img-fuse
T=$(mktemp -d "${TMPDIR:-/tmp}/img-test.XXXXXX")
_exit_cmds=()
at_exit() { _exit_cmds+=("$*"); }
_cleanup() {
	local c
	for c in "${_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
	rm -rf "$T"
}
trap _cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
skip() {
	echo "SKIP: $*"
	exit 77
}
requires() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || skip "requires $c"
	done
}
expect_exit() {
	local want=$1 got
	shift
	"$@" >"$T/.out" 2>"$T/.err"
	got=$?
	if [ "$got" != "$want" ]; then
		cat "$T/.out" "$T/.err" >&2
		fail "expected exit $want, got $got: $*"
	fi
}
[ -x "$IMG" ] || fail "$IMG not built"
