#!/bin/bash
# SPDX-License-Identifier: MIT
# make bench: img against qemu-img on a generated disk-like sample (2 GiB by
# default: ~40% holes, ~30% compressible, ~30% random; see gen-sample.c).
# Rows: convert raw->qcow2, qcow2->raw, a two-image qcow2 chain (base +
# overlay with ~10% rewritten) flattened to qcow2, convert with O_DIRECT on
# both ends (-t none -T none, as a VMM host would run it) raw->qcow2 and
# qcow2->raw, compressed convert (-c, zstd and zlib) against qemu-img's
# default and -m 8 -W, and 4 KiB reads and writes spread over the image
# through each library (img bench / qemu-img bench, same count, depth and
# stride). The two tools run alternately in the same run (img, qemu-img,
# then qemu-img, img, ...), RUNS times each; the table shows the median time
# of each with the spread (min-max) of the runs, and the ratio of the medians
# (every time is listed below it). Every convert result is compared with its
# source (qemu-img compare) and every write run's image with the other
# tool's, so a fast wrong answer fails the run.
#
# usage: bench/run.sh [BUILD_DIR]
# env: BENCH_DIR (work dir, default $TMPDIR/img-bench), BENCH_SIZE_MIB (2048),
#      BENCH_RUNS (5), BENCH_COUNT (bench requests, 75000 as qemu-img bench),
#      BENCH_STRICT=1 (exit 1 when img is slower on a row),
#      BENCH_ROWS (only these groups: convert luks rbd formats compress bench)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-build}
case "$B" in /*) ;; *) B=$top/$B ;; esac
IMG=$B/img
W=${BENCH_DIR:-${TMPDIR:-/tmp}/img-bench}
SIZE_MIB=${BENCH_SIZE_MIB:-2048}
RUNS=${BENCH_RUNS:-5}
COUNT=${BENCH_COUNT:-75000}
DEPTH=64
# 65521 blocks (prime, so odd): the offsets, taken modulo the image size as
# qemu-img bench does, visit 4 KiB blocks all over the image in a scattered,
# repeatable order that both tools can follow.
STEP=$((4096 * 65521))

die() {
	echo "bench: $*" >&2
	exit 1
}
for c in qemu-img qemu-io cc; do
	command -v $c >/dev/null || die "needs $c"
done
[ -x "$IMG" ] || die "$IMG not built (make B=... all)"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || die "img has no qcow2"
mkdir -p "$W" || die "cannot create $W"
cd "$W" || exit 1
start_all=$EPOCHREALTIME

# ---- inputs (regenerated when the generator or the size changes) ----
stamp="$(md5sum <"$top/bench/gen-sample.c" | cut -c1-16)-$SIZE_MIB"
if [ ! -f sample.raw ] || [ "$(cat sample.stamp 2>/dev/null)" != "$stamp" ]; then
	rm -f sample.* base.qcow2 overlay.qcow2
	cc -std=gnu11 -O2 -o gen-sample "$top/bench/gen-sample.c" || die "cc gen-sample"
	./gen-sample sample.raw "$SIZE_MIB" || die "gen-sample failed"
	# The qcow2 inputs are made by qemu-img, the reference tool.
	qemu-img convert -f raw -O qcow2 sample.raw base.qcow2 || die "base.qcow2"
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2 || die "overlay"
	# ~10% of the disk rewritten: 2 MiB data writes and some zeroed
	# ranges at scattered cluster-aligned offsets.
	n=$((SIZE_MIB * 10 / 100 / 2))
	awk -v n="$n" -v size=$((SIZE_MIB << 20)) 'BEGIN {
		x = 12345
		for (i = 0; i < n; i++) {
			x = (x * 1103515245 + 12345) % 2147483648
			off = int(x / 2147483648 * (size / 65536 - 32)) * 65536
			if (i % 8 == 7)
				printf "write -z %d 1M\n", off
			else
				printf "write -P %d %d 2M\n", 1 + i % 250, off
		}
	}' | sed "s/^/-c\n/" | tr '\n' '\0' |
		xargs -0 qemu-io -f qcow2 overlay.qcow2 >/dev/null || die "overlay writes"
	echo "$stamp" >sample.stamp
fi
echo "sample: $(du -h sample.raw | cut -f1) allocated of ${SIZE_MIB} MiB in $W"

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
. "$top/bench/median.sh"

rows=()
img_t=()
qemu_t=()
all_t=()
failed=0

# add_row NAME "IMG RUNS" "QEMU RUNS": the seconds of each run, in order.
add_row() {
	rows+=("$1")
	img_t+=("$2")
	qemu_t+=("$3")
	all_t+=("img:$2 / qemu-img:$3")
}

# convert_row NAME SRC SRC_FMT OUT_FMT [CONVERT OPTIONS...]: time both tools
# with the same options (wall clock; without -t the target cache is unsafe
# for both: qemu-img's default and ours), verify each result.
convert_row() {
	local name=$1 src=$2 sfmt=$3 ofmt=$4 r tool t0 t1 a="" q=""
	local opts=("${@:5}")
	for r in $(seq "$RUNS"); do
		for tool in img qemu; do
			# alternate who goes first
			[ $((r % 2)) = 0 ] && tool=$([ $tool = img ] && echo qemu || echo img)
			rm -f out.$ofmt
			sync
			t0=$(now)
			if [ $tool = img ]; then
				"$IMG" convert -f "$sfmt" -O "$ofmt" "${opts[@]}" "$src" out.$ofmt
			else
				qemu-img convert -f "$sfmt" -O "$ofmt" "${opts[@]}" "$src" out.$ofmt
			fi || die "$tool convert $src failed"
			t1=$(now)
			case $ofmt in vmdk | vhdx)
				sizes+=("$name, $tool: $(stat -c %s out.$ofmt) bytes") ;;
			esac
			if ! qemu-img compare -q -f "$sfmt" -F "$ofmt" "$src" out.$ofmt; then
				echo "bench: $name: $tool's result differs from $src" >&2
				failed=1
			fi
			if [ $tool = img ]; then a+=" $(elapsed "$t0" "$t1")"; else q+=" $(elapsed "$t0" "$t1")"; fi
		done
	done
	rm -f out.$ofmt
	add_row "$name" "$a" "$q"
}

# bench_row NAME WRITE(0/1): same requests for both tools; the time is the
# tool's own "Run completed in" figure (open and close excluded for both).
bench_row() {
	local name=$1 write=$2 r tool a="" q="" out t args
	args=(-f qcow2 -c "$COUNT" -d "$DEPTH" -s 4096 -S "$STEP")
	[ "$write" = 1 ] && args+=(-w --pattern=90)
	for r in $(seq "$RUNS"); do
		for tool in img qemu; do
			[ $((r % 2)) = 0 ] && tool=$([ $tool = img ] && echo qemu || echo img)
			if [ "$write" = 1 ]; then
				rm -f w-$tool.qcow2
				cp --sparse=always base.qcow2 w-$tool.qcow2
				img_file=w-$tool.qcow2
			else
				img_file=base.qcow2
			fi
			sync
			if [ $tool = img ]; then
				out=$("$IMG" bench "${args[@]}" $img_file)
			else
				out=$(qemu-img bench "${args[@]}" $img_file)
			fi || die "$tool bench failed"
			t=$(echo "$out" | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')
			[ -n "$t" ] || die "$tool bench printed no time: $out"
			if [ $tool = img ]; then a+=" $t"; else q+=" $t"; fi
		done
		if [ "$write" = 1 ] && ! qemu-img compare -q w-img.qcow2 w-qemu.qcow2; then
			echo "bench: $name: img's and qemu-img's written images differ" >&2
			failed=1
		fi
	done
	rm -f w-img.qcow2 w-qemu.qcow2
	add_row "$name" "$a" "$q"
}

# compress_row TYPE: convert -c raw -> qcow2 with compression_type=TYPE; img
# with its defaults (a compressor thread per core) against qemu-img's default,
# and img -m 8 (8 compressor threads) against qemu-img -m 8 -W (8 parallel
# requests, out-of-order: its fastest), all in the same run, alternating; each
# result checked (qemu-img check and compare). On a loaded host the thread
# count decides the CPU share, hence the -m 8 pair. Output sizes are listed.
compress_row() {
	local ct=$1 r v t0 t1 a="" am="" q="" qw="" order
	for r in $(seq "$RUNS"); do
		order="img qemu imgM qemuW"
		[ $((r % 2)) = 0 ] && order="qemuW imgM qemu img"
		for v in $order; do
			rm -f out.qcow2
			sync
			t0=$(now)
			case $v in
			img) "$IMG" convert -c -O qcow2 -o compression_type=$ct sample.raw out.qcow2 ;;
			imgM) "$IMG" convert -c -m 8 -O qcow2 -o compression_type=$ct sample.raw out.qcow2 ;;
			qemu) qemu-img convert -c -O qcow2 -o compression_type=$ct sample.raw out.qcow2 ;;
			qemuW) qemu-img convert -c -m 8 -W -O qcow2 -o compression_type=$ct sample.raw out.qcow2 ;;
			esac || die "$v convert -c $ct failed"
			t1=$(now)
			if ! qemu-img check -q out.qcow2 ||
				! qemu-img compare -q -f raw -F qcow2 sample.raw out.qcow2; then
				echo "bench: convert -c $ct: $v's result does not verify" >&2
				failed=1
			fi
			sizes+=("convert -c $ct, $v: $(stat -c %s out.qcow2) bytes")
			case $v in
			img) a+=" $(elapsed "$t0" "$t1")" ;;
			imgM) am+=" $(elapsed "$t0" "$t1")" ;;
			qemu) q+=" $(elapsed "$t0" "$t1")" ;;
			qemuW) qw+=" $(elapsed "$t0" "$t1")" ;;
			esac
		done
	done
	rm -f out.qcow2
	add_row "convert -c $ct (qemu-img default)" "$a" "$q"
	add_row "convert -c $ct -m 8 (qemu-img -m 8 -W)" "$am" "$qw"
}
sizes=()
want() { [ -z "${BENCH_ROWS:-}" ] || [[ " $BENCH_ROWS " == *" $1 "* ]]; }

if want convert; then
convert_row "convert raw -> qcow2" sample.raw raw qcow2
convert_row "convert qcow2 -> raw" base.qcow2 qcow2 raw
convert_row "convert chain(2) -> qcow2 (flatten)" overlay.qcow2 qcow2 qcow2
convert_row "convert -t none -T none raw -> qcow2" sample.raw raw qcow2 -t none -T none
convert_row "convert -t none -T none qcow2 -> raw" base.qcow2 qcow2 raw -t none -T none
fi
. "$top/bench/luks-row.sh"
want luks && luks_row
. "$top/bench/rbd-row.sh"
want rbd && rbd_rows
# Other formats (formats/vmdk, vhdx): their inputs are made by qemu-img.
want formats && for f in vmdk vhdx; do
	"$IMG" --help | grep -q "^Supported formats:.* $f" || continue
	o=""
	[ $f = vmdk ] && o=subformat=streamOptimized
	[ -f base.$f ] || qemu-img convert -O $f ${o:+-o $o} base.qcow2 base.$f ||
		die "base.$f"
	convert_row "convert qcow2 -> $f${o:+ ${o#*=}}" base.qcow2 qcow2 $f ${o:+-o "$o"}
	convert_row "convert $f${o:+ ${o#*=}} -> qcow2" base.$f $f qcow2
done
if want compress; then
compress_row zstd
compress_row zlib
fi
if want bench; then
bench_row "bench 4k read, q$DEPTH, stride 65521 blk" 0
bench_row "bench 4k write, q$DEPTH, stride 65521 blk" 1
fi

echo
echo "img $B vs $(qemu-img --version | head -1); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "seconds: median of $RUNS alternated runs (min-max); ratio of the medians"
echo "bench rows: $COUNT requests of 4 KiB, $DEPTH in flight, offset += $STEP"
echo "  modulo the image size (both tools; qemu-img bench has no random mode)"
printf '%-40s %23s %23s %6s\n' row img qemu-img ratio
slower=()
for i in "${!rows[@]}"; do
	r=$(ratio "$(median %.3f "${qemu_t[$i]}")" "$(median %.3f "${img_t[$i]}")")
	printf '%-40s %23s %23s %6s\n' "${rows[$i]}" "$(median_cell %.3f "${img_t[$i]}")" \
		"$(median_cell %.3f "${qemu_t[$i]}")" "$r"
	awk -v r="$r" 'BEGIN { exit !(r != "-" && r < 1) }' && slower+=("${rows[$i]}")
done
echo "ratio = qemu-img median / img median: above 1 means img is faster"
echo "every run (seconds):"
for i in "${!rows[@]}"; do
	printf '  %-40s %s\n' "${rows[$i]}" "${all_t[$i]}"
done
printf '  %s\n' "${sizes[@]}" | sort -u
echo "total bench time: $(elapsed "$start_all" "$(now)") s"
[ $failed = 0 ] || die "a result did not verify"
if [ ${#slower[@]} -gt 0 ]; then
	echo "img slower on: ${slower[*]}"
	[ "${BENCH_STRICT:-0}" = 1 ] && exit 1
fi
exit 0
