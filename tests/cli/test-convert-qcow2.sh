#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert with qcow2 sources made by qemu-io (data, zero clusters,
# partial clusters, an image of an odd size) and qcow2 targets: every result
# compares equal to the source, passes qemu-img check, and zero clusters of
# the source are not allocated in the target.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 -o cluster_size=65536 src.qcow2 33M
qemu-io -f qcow2 -c 'write -P 0x5a 0 3M' -c 'write -z 1M 1M' \
	-c 'write -P 0x11 5M 4k' -c 'write -P 0 8M 128k' \
	-c 'write -P 0x22 33550336 4k' src.qcow2 >/dev/null

for fmt in raw qcow2; do
	expect_exit 0 "$IMG" convert -f qcow2 -O $fmt src.qcow2 out.$fmt
	qemu-img compare -q -f qcow2 -F $fmt src.qcow2 out.$fmt ||
		fail "qcow2 -> $fmt differs"
done
qemu-img check -q out.qcow2 || fail "qemu-img check out.qcow2"
[ "$(qemu-img info out.raw | grep 'virtual size')" = \
	"$(qemu-img info src.qcow2 | grep 'virtual size')" ] || fail "size differs"

# the zeroed MiB at 1M and the zero-filled data at 8M are holes in the target
allocated_in() { # file start end: is any byte of [start, end) allocated?
	qemu-img map --output=json "$1" | awk -v s="$2" -v e="$3" '
		/"present": true/ {
			match($0, /"start": [0-9]+/); st = substr($0, RSTART + 9, RLENGTH - 9) + 0
			match($0, /"length": [0-9]+/); ln = substr($0, RSTART + 10, RLENGTH - 10) + 0
			if (st + ln > s && st < e) hit = 1
		}
		END { exit !hit }'
}
allocated_in out.qcow2 1048576 2097152 && fail "zero clusters allocated in target"
allocated_in out.qcow2 8388608 8519680 && fail "zero-filled data allocated in target"
allocated_in out.qcow2 0 65536 || fail "data not allocated in target"

# qcow2 -> qcow2 with another cluster size, out of order, one request in flight
expect_exit 0 "$IMG" convert -W -m 1 -O qcow2 -o cluster_size=4096 src.qcow2 small.qcow2
qemu-img compare -q src.qcow2 small.qcow2 || fail "cluster_size=4k copy differs"
qemu-img info small.qcow2 | grep -q 'cluster_size: 4096' || fail "-o not applied"
qemu-img check -q small.qcow2 || fail "qemu-img check small.qcow2"

# several sources are concatenated
expect_exit 0 "$IMG" convert -O raw src.qcow2 out.raw cat.raw
cat out.raw out.raw >expect.raw
cmp expect.raw cat.raw || fail "concatenation differs"
exit 0
