# SPDX-License-Identifier: MIT
# Sourced by the Ceph RBD tests (tests/interop/test-rbd-*.sh), on top of
# interop-lib.sh:
#   rbd_need_lib          skip unless this img build has the rbd backend
#   rbd_cluster           set $POOL, the test's own pool, and export CEPH_CONF
#                         (in which POOL is the rbd tool's default pool) and
#                         CL (the cluster's dir, with its keyring): when
#                         tests/run.sh shares one cluster between the rbd tests
#                         ($IMG_TEST_CEPH_DIR), a pool named after this test is
#                         created there and deleted on exit; otherwise a
#                         throwaway cluster is started in $T/ceph with
#                         scripts/ceph-cluster.sh (skip when the Ceph daemons
#                         are not installed) and stopped on exit even when the
#                         test fails or is killed, POOL=rbd
#   rbd_size IMAGE        size in bytes of RBD image IMAGE of $POOL
. "$(dirname "${BASH_SOURCE[0]}")/interop-lib.sh"

rbd_need_lib() {
	"$IMG" info rbd:rbd/probe:conf=/nonexistent 2>&1 |
		grep -q "built without RBD support" &&
		skip "img is built without RBD support (librbd-dev was missing)"
	return 0
}

rbd_cluster() {
	rbd_need_lib
	requires ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd
	# A signal must still run the EXIT trap that stops the daemons.
	trap 'exit 143' TERM INT HUP
	if [ -n "${IMG_TEST_CEPH_DIR:-}" ] && [ -f "$IMG_TEST_CEPH_DIR/ceph.conf" ]; then
		CL=$IMG_TEST_CEPH_DIR
		POOL=$(basename "$0" .sh)-$$
		local c="timeout 60 ceph -c $CL/ceph.conf --connect-timeout 20"
		at_exit "$c osd pool delete '$POOL' '$POOL' --yes-i-really-really-mean-it"
		$c osd pool create "$POOL" 8 8 >"$T/.pool" 2>&1 &&
			timeout 60 rbd -c "$CL/ceph.conf" pool init "$POOL" >>"$T/.pool" 2>&1 ||
			fail "pool $POOL on the shared cluster $CL: $(cat "$T/.pool")"
	else
		CL=$T/ceph
		POOL=rbd
		at_exit "'$top/scripts/ceph-cluster.sh' stop '$CL'"
		"$top/scripts/ceph-cluster.sh" start "$CL" || fail "the test cluster did not start"
	fi
	# The rbd tool's default pool is the test's own.
	sed "s|^\[client\]\$|&\nrbd default pool = $POOL|" "$CL/ceph.conf" >"$T/ceph.conf"
	grep -q "^rbd default pool = $POOL\$" "$T/ceph.conf" || fail "no [client] in $CL/ceph.conf"
	export CEPH_CONF=$T/ceph.conf
}

rbd_size() {
	timeout 30 rbd info --format json "$1" | sed -n 's/.*"size":\([0-9]*\).*/\1/p'
}
