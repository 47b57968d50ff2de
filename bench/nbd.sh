#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd against qemu-nbd on the same qcow2 image in the same run, both on
# unix sockets with their default cache modes: fio's nbd engine for 4 KiB
# random reads and random writes at queue depth 32 and 1 MiB sequential
# reads (depth 8), and nbdcopy of the whole image to null: (4 connections).
# The servers run alternately (img-nbd, qemu-nbd, img-nbd, ...), RUNS times
# each; each row shows the median of the runs with their spread (min-max),
# IOPS or MB/s, the ratio of the medians img-nbd / qemu-nbd, and the median
# of the server's CPU time (user + system, all threads) per request or per
# MiB copied, which a loaded host disturbs much less than throughput. Then
# the resident memory (VmHWM) of img-nbd serving a 100 GiB sparse qcow2
# while nbdinfo maps it and nbdcopy reads it, against issue 14's target.
# bench/nbd-direct.sh has the O_DIRECT rows.
# The image is 1 GiB of random data written by qemu-img (every cluster
# allocated, so reads and writes exercise the L2 path, not holes).
#
# usage: bench/nbd.sh [BUILD_DIR]
# env: BENCH_DIR (default $TMPDIR/img-bench), BENCH_RUNS (5),
#      BENCH_NBD_SECS (seconds per fio row, 5), BENCH_NBD_ARGS (extra img-nbd
#      options, e.g. --threads=4)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-build}
case "$B" in /*) ;; *) B=$top/$B ;; esac
NBD=$B/img-nbd
W=${BENCH_DIR:-${TMPDIR:-/tmp}/img-bench}
RUNS=${BENCH_RUNS:-5}
SECS=${BENCH_NBD_SECS:-5}
EXTRA=${BENCH_NBD_ARGS:-}
RSS_TARGET_MIB=32

die() {
	echo "bench-nbd: $*" >&2
	exit 1
}
for c in qemu-img qemu-nbd fio nbdcopy nbdinfo python3; do
	command -v $c >/dev/null || die "needs $c"
done
[ -x "$NBD" ] || die "$NBD not built"
. "$top/bench/median.sh"
mkdir -p "$W" && cd "$W" || die "cannot use $W"

if [ ! -f nbd-1g.qcow2 ]; then
	head -c 1G /dev/urandom >nbd-1g.raw || die "random input"
	qemu-img convert -f raw -O qcow2 nbd-1g.raw nbd-1g.qcow2 || die "qcow2"
	rm -f nbd-1g.raw
fi

pid=
start_server() {
	rm -f "$W/nbd.sock"
	case $1 in
	img) "$NBD" -t -f qcow2 -k "$W/nbd.sock" $EXTRA nbd-1g.qcow2 & ;;
	qemu) qemu-nbd -t -f qcow2 -k "$W/nbd.sock" nbd-1g.qcow2 & ;;
	esac
	pid=$!
	for _ in $(seq 100); do
		[ -S "$W/nbd.sock" ] && return
		sleep 0.05
	done
	die "$1 server did not start"
}
stop_server() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
trap 'stop_server' EXIT
URI="nbd+unix:///?socket=$W/nbd.sock"

# Server CPU time so far in microseconds (utime + stime of all threads).
cpu_us() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e6 / hz }' "/proc/$pid/stat"
}

# fio_row RW BS DEPTH: prints "IOPS MB/s IOS"
fio_row() {
	fio --name=b --ioengine=nbd --uri="$URI" --rw="$1" --bs="$2" \
		--iodepth="$3" --time_based --runtime="$SECS" --size=1G \
		--randrepeat=0 --norandommap --output-format=json 2>/dev/null |
		sed -n '/^{/,$p' | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
r = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.1f %d" % (r["iops"], r["bw_bytes"] / 1e6, r["total_ios"]))'
}

copy_row() {
	local t0=$EPOCHREALTIME
	nbdcopy --connections=4 "$URI" null: || die "nbdcopy failed"
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f\n", 1073741824 / (b - a) / 1e6 }'
}

declare -A res cpu
for _ in $(seq "$RUNS"); do
	for srv in img qemu; do
		start_server $srv
		for row in "rr randread 4k 32" "rw randwrite 4k 32" "seq read 1M 8"; do
			set -- $row
			c0=$(cpu_us)
			read -r iops mbs ios < <(fio_row "$2" "$3" "$4")
			c1=$(cpu_us)
			if [ "$1" = seq ]; then res[$srv,$1]+="$mbs "; else res[$srv,$1]+="$iops "; fi
			cpu[$srv,$1]+="$(awk -v a="$c0" -v b="$c1" -v n="$ios" 'BEGIN { printf "%.1f", n ? (b - a) / n : 0 }') "
		done
		c0=$(cpu_us)
		res[$srv,copy]+="$(copy_row) "
		c1=$(cpu_us)
		cpu[$srv,copy]+="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", (b - a) / 1024 }') "
		stop_server
	done
done

echo
echo "img-nbd vs qemu-nbd, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median of $RUNS alternated runs (min-max); ratio of the medians"
printf '%-32s %21s %21s %6s   %s\n' "row" "img-nbd" "qemu-nbd" "ratio" \
	"server CPU us/request (/MiB for nbdcopy), median: img-nbd, qemu-nbd"
for row in "rr:fio 4k randread qd32 (IOPS)" "rw:fio 4k randwrite qd32 (IOPS)" \
	"seq:fio 1M read qd8 (MB/s)" "copy:nbdcopy whole image (MB/s)"; do
	k=${row%%:*}
	f=%.0f
	case $k in seq | copy) f=%.1f ;; esac
	printf '%-32s %21s %21s %6s   %s, %s\n' "${row#*:}" \
		"$(median_cell $f "${res[img,$k]}")" "$(median_cell $f "${res[qemu,$k]}")" \
		"$(ratio "$(median $f "${res[img,$k]}")" "$(median $f "${res[qemu,$k]}")")" \
		"$(median %.1f "${cpu[img,$k]}")" "$(median %.1f "${cpu[qemu,$k]}")"
	echo "  runs: img-nbd ${res[img,$k]}| qemu-nbd ${res[qemu,$k]}"
done

# Resident memory serving a 100 GiB sparse image.
qemu-img create -q -f qcow2 nbd-100g.qcow2 100G || die "100G image"
qemu-io -c "write -P 1 0 64M" -c "write -P 2 50G 64M" nbd-100g.qcow2 >/dev/null
rm -f "$W/nbd.sock"
"$NBD" -t -f qcow2 -k "$W/nbd.sock" $EXTRA nbd-100g.qcow2 &
pid=$!
for _ in $(seq 100); do [ -S "$W/nbd.sock" ] && break; sleep 0.05; done
nbdinfo --map "$URI" >/dev/null || die "nbdinfo --map"
nbdcopy --connections=4 "$URI" null: || die "nbdcopy 100G"
hwm=$(awk '/VmHWM/ { print $2 }' /proc/$pid/status)
stop_server
rm -f nbd-100g.qcow2
met="not met"
[ $((hwm / 1024)) -lt $RSS_TARGET_MIB ] && met=met
echo "img-nbd peak RSS serving a 100 GiB sparse qcow2 (map + full nbdcopy): $((hwm / 1024)) MiB (target < $RSS_TARGET_MIB MiB: $met)"
