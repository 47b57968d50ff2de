# SPDX-License-Identifier: MIT
# Sourced by the interop tests (tests/interop/test-*.sh): helpers that run the
# same operations through img and through qemu-img/qemu-io and compare the
# results. On top of tests/cli/functions.sh it provides:
#   need_format FMT             skip unless this img build has the FMT driver
#   tcase CMD...                run one case (a function and its arguments) in
#                               a subshell: a failure is recorded, and the next
#                               case still runs
#   finish                      exit 1 listing the failed cases, or print ok
#   ctx                         a variable naming the current case (in messages)
#   must CMD...                 run CMD (at most $STEP_TIMEOUT seconds, default 60);
#                               on failure print its output and fail
#   qcheck FILE [ARGS]          `qemu-img check` must exit 0 (no corruption, no leak)
#   icheck FILE [ARGS]          `img check` must exit 0
#   qcompare A B [ARGS]         `qemu-img compare` must say identical
#   icompare A B [ARGS]         `img compare` must say identical
#   img_ops FILE FMT OP...      apply qemu-io style ops with `img io`
#   qemu_ops FILE FMT OP...     apply them with qemu-io
#   ref_new FILE SIZE           a sparse raw reference of SIZE bytes
#   ops_basic CS L2SPAN SIZE [unaligned-discards]
#                               print a list of ops (one per line) that write
#                               patterns at unaligned offsets, zero, discard,
#                               and cross cluster and L2 boundaries
#   l2span CS [EXTL2]           guest bytes one L2 table maps
#   qemu_export FILE DST        qemu's own raw export of FILE
#   img_reads_same FILE REF     img reads FILE byte-identical to raw REF
#                               (img convert -O raw + cmp, img compare)
. "$(dirname "${BASH_SOURCE[0]}")/../cli/functions.sh"
requires qemu-img qemu-io cmp

ctx=""
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
_failed=()

tcase() {
	(
		"$@"
	) && return
	_failed+=("$*")
	echo "FAILED CASE: $*" >&2
}

finish() {
	if [ ${#_failed[@]} -gt 0 ]; then
		echo "${#_failed[@]} case(s) failed:" >&2
		printf '  %s\n' "${_failed[@]}" >&2
		exit 1
	fi
	echo "ok"
}

need_format() {
	"$IMG" --help 2>/dev/null | grep '^Supported formats:' | grep -qw -- "$1" ||
		skip "img is built without the $1 driver ('img --help' does not list it)"
}

must() {
	local rc
	timeout -k 5 "$STEP_TIMEOUT" "$@" >"$T/.must" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		tail -n 30 "$T/.must" >&2
		[ $rc = 124 ] && echo "(timed out after ${STEP_TIMEOUT}s)" >&2
		fail "${ctx:+[$ctx] }exit $rc: $*"
	fi
}

qcheck() {
	local f=$1 rc
	shift
	timeout -k 5 "$STEP_TIMEOUT" qemu-img check "$@" "$f" >"$T/.qcheck" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		cat "$T/.qcheck" >&2
		fail "${ctx:+[$ctx] }qemu-img check $* $f: exit $rc"
	fi
}

icheck() {
	local f=$1 rc
	shift
	timeout -k 5 "$STEP_TIMEOUT" "$IMG" check "$@" "$f" >"$T/.icheck" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		cat "$T/.icheck" >&2
		fail "${ctx:+[$ctx] }img check $* $f: exit $rc"
	fi
}

qcompare() {
	local a=$1 b=$2 rc
	shift 2
	timeout -k 5 "$STEP_TIMEOUT" qemu-img compare "$@" "$a" "$b" >"$T/.qcmp" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		cat "$T/.qcmp" >&2
		fail "${ctx:+[$ctx] }qemu-img compare $* $a $b: exit $rc"
	fi
}

icompare() {
	local a=$1 b=$2 rc
	shift 2
	timeout -k 5 "$STEP_TIMEOUT" "$IMG" compare "$@" "$a" "$b" >"$T/.icmp" 2>&1
	rc=$?
	if [ $rc != 0 ]; then
		cat "$T/.icmp" >&2
		fail "${ctx:+[$ctx] }img compare $* $a $b: exit $rc"
	fi
}

# img_ops FILE FMT OP...: one `img io` run with every op as a -c command.
img_ops() {
	local f=$1 fmt=$2 op args=()
	shift 2
	for op in "$@"; do args+=(-c "$op"); done
	must "$IMG" io -f "$fmt" "${args[@]}" "$f"
}

qemu_ops() {
	local f=$1 fmt=$2 op args=()
	shift 2
	for op in "$@"; do args+=(-c "$op"); done
	must qemu-io -f "$fmt" "${args[@]}" "$f"
}

ref_new() {
	rm -f "$1"
	truncate -s "$2" "$1" || fail "truncate $1"
}

l2span() {
	local cs=$1 entry=8
	[ "${2:-off}" = on ] && entry=16
	echo $((cs / entry * cs))
}

# ops_basic CS L2SPAN SIZE [u]: with "u", discards are unaligned too (only
# for comparing against qemu's own result: the contents of a partly
# discarded cluster are up to the format).
ops_basic() {
	local cs=$1 l2=$2 size=$3 u=${4:-}
	local d=0
	[ "$u" = u ] && d=$((cs / 3 + 1))
	echo "write -P 0x11 0 $((3 * cs + 123))"
	echo "write -P 0x22 $((cs - 100)) 300"
	echo "write -P 0x33 $((5 * cs + 7)) $((2 * cs))"
	echo "write -z $((cs + 1)) $cs"
	echo "write -P 0x66 $((8 * cs)) $((4 * cs))"
	echo "write -z -u $((9 * cs)) $((2 * cs))"
	echo "write -P 0x77 $((16 * cs)) $((4 * cs))"
	echo "discard $((17 * cs + d)) $((2 * cs))"
	echo "write -P 0x88 $((17 * cs + 5)) 10"
	echo "write -P 0x99 $((24 * cs + 3)) 1"
	echo "write -z $((26 * cs)) $((3 * cs + 17))"
	if [ $((l2 + 8192)) -lt "$size" ]; then
		echo "write -P 0x44 $((l2 - 1000)) 5000"
		echo "write -P 0x45 $((l2 - cs)) $((2 * cs))"
		echo "write -z $((l2 - 3)) 7"
	fi
	if [ $((2 * l2 + 8192)) -lt "$size" ]; then
		echo "write -P 0x55 $((2 * l2 - 3 * cs)) $((6 * cs))"
		echo "discard $((2 * l2 - 2 * cs + d)) $((4 * cs))"
	fi
	echo "write -P 0xee $((size - 777)) 777"
	echo "write -P 0xef $((size - cs)) 1"
}

qemu_export() {
	rm -f "$2"
	must qemu-img convert -O raw "$1" "$2"
}

img_reads_same() {
	local f=$1 ref=$2 out=$T/.img-export.raw
	rm -f "$out"
	must "$IMG" convert -O raw "$f" "$out"
	if ! cmp "$out" "$ref" >"$T/.cmp" 2>&1; then
		cat "$T/.cmp" >&2
		fail "${ctx:+[$ctx] }img convert -O raw $f differs from the reference"
	fi
	icompare "$f" "$ref"
	rm -f "$out"
}
