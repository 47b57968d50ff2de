#!/bin/bash
# SPDX-License-Identifier: MIT
# make bench, O_DIRECT part (issue 14): VMMs run their disks with
# cache=none, so this is the mode that counts. 4 KiB random reads and writes
# at queue depth 32 (fio's nbd engine over a unix socket) through
# `img-nbd --cache=none` and `qemu-nbd --cache=none --aio=io_uring`, set
# against fio's own io_uring with O_DIRECT on the same file (the qcow2's
# randwrite row: on the raw file, as fio must never write into a qcow2):
# what the device gives here, the limit for both servers. Three images:
#   raw:        a file of random data (every block on disk);
#   qcow2:      qemu-img convert of that file (every cluster allocated, so
#               each request goes through the L2 path);
#   allocating: writes into an empty qcow2, recreated before every run for
#               each server; fio's row there writes into a fresh sparse raw
#               file (fio never writes into a qcow2 file).
# img-nbd, qemu-nbd and fio take turns, the order rotating from one run to
# the next; a row shows the median IOPS of the runs with their spread
# (min-max), the ratios img/qemu and img/fio of the medians, and each row is
# marked against issue 14's targets (never the exit status: a benchmark does
# not fail on speed). The script checks that each server really opened its
# image with O_DIRECT (/proc/PID/fdinfo), and every qcow2 a server wrote
# must pass qemu-img check, or the script fails.
#
# usage: bench/nbd-direct.sh [BUILD_DIR]
# env: BENCH_DIR (default $TMPDIR/img-bench), BENCH_RUNS (5),
#      BENCH_NBD_SECS (seconds per fio run, 8), BENCH_DIRECT_SIZE_MIB (1024),
#      BENCH_NBD_ARGS (extra img-nbd options)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-build}
case "$B" in /*) ;; *) B=$top/$B ;; esac
NBD=$B/img-nbd
W=${BENCH_DIR:-${TMPDIR:-/tmp}/img-bench}
RUNS=${BENCH_RUNS:-5}
SECS=${BENCH_NBD_SECS:-8}
SIZE_MIB=${BENCH_DIRECT_SIZE_MIB:-1024}
EXTRA=${BENCH_NBD_ARGS:-}
# Issue 14's targets: img-nbd's IOPS at least this share of fio's (raw,
# allocated qcow2), and at least this multiple of qemu-nbd's on every row.
T_RAW_FIO=0.75
T_QCOW2_FIO=0.65
T_QEMU=1.5

die() {
	echo "bench-nbd-direct: $*" >&2
	exit 1
}
for c in qemu-img qemu-nbd fio python3 timeout; do
	command -v $c >/dev/null || die "needs $c"
done
[ -x "$NBD" ] || die "$NBD not built"
"$NBD" --help | grep -q -- '--cache=.*none' || die "img-nbd has no --cache=none"
for e in nbd io_uring; do
	fio --enghelp 2>/dev/null | grep -qx "[[:space:]]*$e" || die "fio has no $e engine"
done
. "$top/bench/median.sh"
mkdir -p "$W" && cd "$W" || die "cannot use $W"
O_DIRECT=$(python3 -c 'import os; print(os.O_DIRECT)')

# tmpfs (before Linux 6.6) and some other filesystems refuse O_DIRECT; the
# rows would then measure nothing.
dd if=/dev/zero of=direct-probe bs=4096 count=1 oflag=direct status=none ||
	die "the filesystem of $W refuses O_DIRECT (set BENCH_DIR)"
rm -f direct-probe

size=$((SIZE_MIB << 20))
if [ "$(stat -c %s direct.raw 2>/dev/null)" != $size ] || [ ! -f direct.qcow2 ]; then
	rm -f direct.raw direct.qcow2
	head -c $size /dev/urandom >direct.raw || die "random input"
	qemu-img convert -f raw -O qcow2 direct.raw direct.qcow2 || die "qcow2"
	sync
fi

pid=
sock=$W/direct.sock
URI="nbd+unix:///?socket=$sock"
# start_server img|qemu FMT FILE
start_server() {
	rm -f "$sock"
	case $1 in
	img) "$NBD" -t -f "$2" --cache=none $EXTRA -k "$sock" "$3" & ;;
	qemu) qemu-nbd -t -f "$2" --cache=none --aio=io_uring -k "$sock" "$3" & ;;
	esac
	pid=$!
	for _ in $(seq 100); do
		[ -S "$sock" ] && return
		sleep 0.05
	done
	die "$1 server did not start on $3"
}
stop_server() {
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}
trap 'stop_server' EXIT

# direct_fds FILE: "N/M": N of the server's M descriptors on FILE have
# O_DIRECT set.
direct_fds() {
	local f n=0 m=0 path flags
	path=$(realpath "$1")
	for f in /proc/"$pid"/fd/*; do
		[ "$(readlink "$f")" = "$path" ] || continue
		flags=$(awk '/^flags:/ { print $2 }' "/proc/$pid/fdinfo/${f##*/}")
		m=$((m + 1))
		[ $((8#$flags & O_DIRECT)) != 0 ] && n=$((n + 1))
	done
	echo "$n/$m"
}

# Server CPU time so far in microseconds (utime + stime of all threads).
cpu_us() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e6 / hz }' "/proc/$pid/stat"
}

# fio_4k RW ENGINE ARGS...: prints "IOPS IOS" of a 4 KiB QD32 run.
fio_4k() {
	local rw=$1
	shift
	timeout $((SECS + 120)) fio --name=d --rw="$rw" --bs=4k --iodepth=32 \
		--time_based --runtime="$SECS" --size=$size --randrepeat=0 \
		--norandommap --output-format=json "$@" 2>/dev/null |
		sed -n '/^{/,$p' | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
r = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %d" % (r["iops"], r["total_ios"]))'
}

declare -A iops cpu odirect
failed=0

# serve TOOL CASE FMT FILE ROWS...: one run of one server on FILE.
serve() {
	local tool=$1 cs=$2 fmt=$3 file=$4 rw c0 c1 n ios
	shift 4
	start_server "$tool" "$fmt" "$file"
	odirect[$tool,$cs]+="$(direct_fds "$file") "
	for rw in "$@"; do
		c0=$(cpu_us)
		read -r n ios < <(fio_4k "$rw" --ioengine=nbd --uri="$URI")
		[ -n "${n:-}" ] || die "fio $rw through $tool on $cs failed"
		c1=$(cpu_us)
		iops[$tool,$cs,$rw]+="$n "
		cpu[$tool,$cs,$rw]+="$(awk -v a="$c0" -v b="$c1" -v n="$ios" \
			'BEGIN { printf "%.1f", n ? (b - a) / n : 0 }') "
	done
	stop_server
	if [ "$fmt" = qcow2 ] && ! qemu-img check -q "$file"; then
		echo "bench-nbd-direct: $file does not check clean after $tool's run" >&2
		failed=1
	fi
}

# device FILE CASE ROWS...: fio's io_uring O_DIRECT on FILE itself.
device() {
	local file=$1 cs=$2 rw n ios
	shift 2
	for rw in "$@"; do
		read -r n ios < <(fio_4k "$rw" --ioengine=io_uring --direct=1 --filename="$file")
		[ -n "${n:-}" ] || die "fio $rw on $file failed"
		iops[fio,$cs,$rw]+="$n "
	done
}

order() { # the tools' order in run R: img qemu fio, rotated by one each run
	local tools=(img qemu fio) i=$((($1 - 1) % 3))
	echo "${tools[*]:i} ${tools[*]:0:i}"
}

for r in $(seq "$RUNS"); do
	for tool in $(order "$r"); do
		case $tool in
		fio) device direct.raw raw randread randwrite ;;
		*) serve "$tool" raw raw direct.raw randread randwrite ;;
		esac
	done
	for tool in $(order "$r"); do
		case $tool in
		fio)
			# reading the qcow2 file itself is harmless; its writes
			# go to the raw file, the same device
			device direct.qcow2 qcow2 randread
			device direct.raw qcow2 randwrite
			;;
		*) serve "$tool" qcow2 qcow2 direct.qcow2 randread randwrite ;;
		esac
	done
	for tool in $(order "$r"); do
		rm -f alloc.qcow2 alloc.raw
		case $tool in
		fio)
			truncate -s $size alloc.raw || die "sparse raw"
			device alloc.raw alloc randwrite
			;;
		*)
			qemu-img create -q -f qcow2 alloc.qcow2 $size || die "empty qcow2"
			serve "$tool" alloc qcow2 alloc.qcow2 randwrite
			;;
		esac
	done
done
rm -f alloc.qcow2 alloc.raw

echo
echo "O_DIRECT, 4 KiB at QD32, ${SECS}s a run: img-nbd --cache=none vs qemu-nbd $(qemu-nbd --version |
	head -1 | awk '{ print $2 }') --cache=none --aio=io_uring (fio nbd engine, unix socket)"
echo "vs fio --ioengine=io_uring --direct=1 on the same file; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "IOPS: median of $RUNS alternated runs (min-max); ratios of the medians"
echo "qcow2 allocating: writes into an empty qcow2 (fio: into a fresh sparse raw file)"
echo "targets (issue 14): raw img/fio >= $T_RAW_FIO, allocated qcow2 img/fio >= $T_QCOW2_FIO, img/qemu >= $T_QEMU on every row"
met() { awk -v r="$1" -v t="$2" 'BEGIN { print (r != "-" && r >= t) ? "met" : "not met" }'; }
line() { printf '%-34s %21s %21s %21s %8s %7s  %s\n' "$@"; }
line row img-nbd qemu-nbd fio img/qemu img/fio targets
for row in "raw:randread:raw" "raw:randwrite:raw" \
	"qcow2:randread:qcow2 allocated" "qcow2:randwrite:qcow2 allocated" \
	"alloc:randwrite:qcow2 allocating"; do
	IFS=: read -r cs rw name <<<"$row"
	mi=$(median %.0f "${iops[img,$cs,$rw]}")
	mq=$(median %.0f "${iops[qemu,$cs,$rw]}")
	mf=$(median %.0f "${iops[fio,$cs,$rw]}")
	rq=$(ratio "$mi" "$mq")
	rf=$(ratio "$mi" "$mf")
	goal="qemu x$T_QEMU $(met "$rq" $T_QEMU)"
	case $cs in
	raw) goal="fio x$T_RAW_FIO $(met "$rf" $T_RAW_FIO), $goal" ;;
	qcow2) goal="fio x$T_QCOW2_FIO $(met "$rf" $T_QCOW2_FIO), $goal" ;;
	esac
	line "$name $rw" "$(median_cell %.0f "${iops[img,$cs,$rw]}")" \
		"$(median_cell %.0f "${iops[qemu,$cs,$rw]}")" \
		"$(median_cell %.0f "${iops[fio,$cs,$rw]}")" "$rq" "$rf" "$goal"
done
echo "every run (IOPS), and the servers' median CPU time per request (user + system, us):"
for row in raw:randread raw:randwrite qcow2:randread qcow2:randwrite alloc:randwrite; do
	IFS=: read -r cs rw <<<"$row"
	echo "  $cs $rw: img-nbd ${iops[img,$cs,$rw]}| qemu-nbd ${iops[qemu,$cs,$rw]}| fio ${iops[fio,$cs,$rw]}| CPU/request img-nbd $(median %.1f "${cpu[img,$cs,$rw]}"), qemu-nbd $(median %.1f "${cpu[qemu,$cs,$rw]}")"
done
# A server that left O_DIRECT off would be measured from the page cache.
echo "descriptors on the image with O_DIRECT / all, each run:"
for k in "${!odirect[@]}"; do
	echo "  ${k%,*}-nbd on ${k#*,}: ${odirect[$k]}"
done | sort
for k in "${!odirect[@]}"; do
	for v in ${odirect[$k]}; do
		if [ "${v%/*}" = 0 ] || [ "${v%/*}" != "${v#*/}" ]; then
			echo "bench-nbd-direct: ${k%,*} on ${k#*,}: only $v descriptors on the image have O_DIRECT" >&2
			failed=1
			break
		fi
	done
done
[ $failed = 0 ] || die "a check failed (see above)"
exit 0
