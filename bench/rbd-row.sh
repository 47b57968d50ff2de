# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2034
# Sourced by bench/run.sh: the Ceph RBD rows. rbd_rows starts a throwaway
# cluster (scripts/ceph-cluster.sh, one memstore OSD: the cluster's data sit
# in RAM, so the rows time the client side and the local messenger) and
# times img against qemu-img with QEMU's rbd driver, alternating, on
# convert base.qcow2 -> rbd raw (a fresh RBD image each run) and rbd raw ->
# qcow2 (from an RBD image qemu-img wrote from sample.raw), and map of that
# image. Each result is checked with qemu-img compare (map: the same output). Without the Ceph packages or an img built
# with RBD support the rows are left out with a note.
rbd_rows() {
	local top cl r v t0 t1 a="" q="" rc=0
	top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	cl=$W/ceph
	if ! command -v ceph-mon >/dev/null ||
		"$IMG" info rbd:rbd/x:conf=/nonexistent 2>&1 | grep -q "without RBD"; then
		echo "bench: RBD rows left out (Ceph packages or img's RBD support missing)" >&2
		return 0
	fi
	rm -rf "$cl"
	CEPH_STORE_BYTES=$((8 << 30)) "$top/scripts/ceph-cluster.sh" start "$cl" ||
		die "the Ceph test cluster did not start"
	export CEPH_CONF=$cl/ceph.conf
	for r in $(seq "$RUNS"); do
		for v in img qemu; do
			[ $((r % 2)) = 0 ] && v=$([ $v = img ] && echo qemu || echo img)
			timeout 60 rbd rm --no-progress out >/dev/null 2>&1
			t0=$(now)
			if [ $v = img ]; then
				"$IMG" convert -f qcow2 -O raw base.qcow2 rbd:rbd/out
			else
				qemu-img convert -f qcow2 -O raw base.qcow2 rbd:rbd/out
			fi || { rc=1; break 2; }
			t1=$(now)
			qemu-img compare -q -f qcow2 -F raw base.qcow2 rbd:rbd/out ||
				{ echo "bench: rbd: $v's result differs" >&2; failed=1; }
			if [ $v = img ]; then a+=" $(elapsed "$t0" "$t1")"; else q+=" $(elapsed "$t0" "$t1")"; fi
		done
	done
	[ $rc = 0 ] && add_row "convert qcow2 -> rbd raw" "$a" "$q"
	a="" q=""
	timeout 60 rbd rm --no-progress out >/dev/null 2>&1
	[ $rc = 0 ] && { qemu-img convert -f raw -O raw sample.raw rbd:rbd/src || rc=1; }
	for r in $(seq "$RUNS"); do
		[ $rc = 0 ] || break
		for v in img qemu; do
			[ $((r % 2)) = 0 ] && v=$([ $v = img ] && echo qemu || echo img)
			rm -f out.qcow2
			t0=$(now)
			if [ $v = img ]; then
				"$IMG" convert -f raw -O qcow2 rbd:rbd/src out.qcow2
			else
				qemu-img convert -f raw -O qcow2 rbd:rbd/src out.qcow2
			fi || { rc=1; break 2; }
			t1=$(now)
			qemu-img compare -q -f raw -F qcow2 sample.raw out.qcow2 ||
				{ echo "bench: rbd: $v's result differs" >&2; failed=1; }
			if [ $v = img ]; then a+=" $(elapsed "$t0" "$t1")"; else q+=" $(elapsed "$t0" "$t1")"; fi
		done
	done
	rm -f out.qcow2
	[ $rc = 0 ] && add_row "convert rbd raw -> qcow2" "$a" "$q"
	a="" q=""
	for r in $(seq "$RUNS"); do
		[ $rc = 0 ] || break
		for v in img qemu; do
			[ $((r % 2)) = 0 ] && v=$([ $v = img ] && echo qemu || echo img)
			t0=$(now)
			if [ $v = img ]; then
				"$IMG" map --output=json -f raw rbd:rbd/src >map.$v
			else
				qemu-img map --output=json -f raw rbd:rbd/src >map.$v
			fi || { rc=1; break 2; }
			t1=$(now)
			if [ $v = img ]; then a+=" $(elapsed "$t0" "$t1")"; else q+=" $(elapsed "$t0" "$t1")"; fi
		done
		cmp -s map.img map.qemu ||
			{ echo "bench: rbd: img map and qemu-img map differ" >&2; failed=1; }
	done
	rm -f map.img map.qemu
	[ $rc = 0 ] && add_row "map rbd raw (--output=json)" "$a" "$q"
	"$top/scripts/ceph-cluster.sh" stop "$cl"
	rm -rf "$cl"
	unset CEPH_CONF
	[ $rc = 0 ] || die "an RBD convert failed"
}
