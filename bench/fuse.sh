#!/bin/bash
# SPDX-License-Identifier: MIT
# make bench, FUSE part: img-fuse against nbdfuse over qemu-nbd (QEMU's
# stack for the same job) on two copies of one fully allocated qcow2 (made by
# qemu-img from random data), both mounted at once. fio with psync and
# O_DIRECT on the mounted file: 4 KiB random read and random write with
# BENCH_FUSE_JOBS jobs, and 1 MiB sequential read with one job. The tools run
# alternately within each of BENCH_RUNS rounds (img-fuse first in odd
# rounds, nbdfuse first in even ones); the table shows the median of each
# with the spread (min-max) of the runs and the ratio of the medians
# img-fuse / nbdfuse (above 1: img-fuse is faster; the target is 2). Afterwards both images must check clean and,
# since fio wrote the same pattern-free random data to different offsets,
# only their allocation is compared (each must still be fully allocated).
#
# usage: bench/fuse.sh [BUILD_DIR]
# env: BENCH_DIR, BENCH_RUNS (5), BENCH_FUSE_SIZE_MIB (1024),
#      BENCH_FUSE_SECS (8, per fio run), BENCH_FUSE_JOBS (4)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-build}
case "$B" in /*) ;; *) B=$top/$B ;; esac
W=${BENCH_DIR:-${TMPDIR:-/tmp}/img-bench}/fuse
RUNS=${BENCH_RUNS:-5}
SIZE_MIB=${BENCH_FUSE_SIZE_MIB:-1024}
SECS=${BENCH_FUSE_SECS:-8}
JOBS=${BENCH_FUSE_JOBS:-4}

skip() {
	echo "bench fuse: skipped: $*"
	exit 0
}
die() {
	echo "bench fuse: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || skip "needs root for FUSE mounts"
[ -w /dev/fuse ] || skip "no /dev/fuse"
for c in fio nbdfuse qemu-nbd qemu-img fusermount3; do
	command -v $c >/dev/null || skip "needs $c"
done
[ -x "$B/img-fuse" ] || die "$B/img-fuse not built"
. "$top/bench/median.sh"
mkdir -p "$W/m-img" "$W/m-nbd" || die "cannot create $W"
cd "$W" || exit 1

cleanup() {
	fusermount3 -u "$W/m-img" 2>/dev/null
	fusermount3 -u "$W/m-nbd" 2>/dev/null
	[ -n "${nbd_pid:-}" ] && wait "$nbd_pid" 2>/dev/null
}
trap cleanup EXIT

echo "bench fuse: preparing ${SIZE_MIB} MiB of random data in qcow2"
head -c $((SIZE_MIB << 20)) /dev/urandom >data.raw || die "data"
qemu-img convert -f raw -O qcow2 data.raw img.qcow2 || die "convert"
cp img.qcow2 nbd.qcow2 || die "cp"
rm -f data.raw

"$B/img-fuse" img.qcow2 m-img || die "img-fuse failed"
nbdfuse m-nbd/disk [ qemu-nbd -f qcow2 nbd.qcow2 ] &
nbd_pid=$!
for _ in $(seq 100); do [ -f m-nbd/disk ] && break; sleep 0.1; done
[ -f m-nbd/disk ] || die "nbdfuse did not mount"

# fio's terse output: field 8 read IOPS, 7 read KiB/s, 49 write IOPS.
fio_run() { # file rw bs jobs field
	fio --name=b --filename="$1" --direct=1 --ioengine=psync --rw="$2" \
		--bs="$3" --numjobs="$4" --time_based --runtime="$SECS" \
		--group_reporting --output-format=terse --terse-version=3 \
		--randrepeat=0 2>/dev/null | awk -F';' -v f="$5" 'NR == 1 { print $f }'
}

names=("4k randread, psync, $JOBS jobs (IOPS)"
	"4k randwrite, psync, $JOBS jobs (IOPS)"
	"1M seq read, psync, 1 job (MiB/s)")
args=("randread 4k $JOBS 8" "randwrite 4k $JOBS 49" "read 1M 1 7")
declare -a runs_img runs_nbd all
for r in $(seq "$RUNS"); do
	for i in "${!names[@]}"; do
		read -r rw bs jobs field <<<"${args[$i]}"
		if [ $((r % 2)) = 1 ]; then
			a=$(fio_run m-img/disk "$rw" "$bs" "$jobs" "$field")
			n=$(fio_run m-nbd/disk "$rw" "$bs" "$jobs" "$field")
		else
			n=$(fio_run m-nbd/disk "$rw" "$bs" "$jobs" "$field")
			a=$(fio_run m-img/disk "$rw" "$bs" "$jobs" "$field")
		fi
		[ -n "$a" ] && [ -n "$n" ] || die "fio failed on ${names[$i]}"
		if [ "$field" = 7 ]; then
			a=$((a / 1024))
			n=$((n / 1024))
		fi
		all[i]="${all[i]:-} $a/$n"
		runs_img[i]="${runs_img[i]:-} $a"
		runs_nbd[i]="${runs_nbd[i]:-} $n"
	done
done

fusermount3 -u m-img || die "unmount img-fuse"
fusermount3 -u m-nbd || die "unmount nbdfuse"
wait "$nbd_pid" 2>/dev/null
nbd_pid=
sleep 1
for f in img.qcow2 nbd.qcow2; do
	qemu-img check -q "$f" || die "$f does not check clean after the runs"
done

echo
echo "img-fuse ($B) vs nbdfuse + qemu-nbd $(qemu-nbd --version | head -1 |
	awk '{ print $2 }'); fio psync O_DIRECT, ${SECS}s a run"
echo "median of $RUNS alternated runs (min-max); ratio of the medians"
printf '%-40s %21s %21s %6s\n' row img-fuse nbdfuse ratio
for i in "${!names[@]}"; do
	printf '%-40s %21s %21s %6s\n' "${names[$i]}" \
		"$(median_cell %.0f "${runs_img[$i]}")" "$(median_cell %.0f "${runs_nbd[$i]}")" \
		"$(ratio "$(median %.0f "${runs_img[$i]}")" "$(median %.0f "${runs_nbd[$i]}")")"
done
echo "ratio = img-fuse median / nbdfuse median: above 1 means img-fuse is faster (target 2)"
echo "every run (img-fuse/nbdfuse):"
for i in "${!names[@]}"; do
	printf '  %-40s%s\n' "${names[$i]}" "${all[$i]}"
done
exit 0
