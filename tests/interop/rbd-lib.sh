# SPDX-License-Identifier: MIT
# Sourced by the Ceph RBD tests (tests/interop/test-rbd-*.sh), on top of
# interop-lib.sh:
#   rbd_need_lib          skip unless this img build has the rbd backend
#   rbd_cluster           start a throwaway cluster in $T/ceph with
#                         scripts/ceph-cluster.sh (skip when the Ceph daemons
#                         are not installed), stop it on exit even when the
#                         test fails or is killed, export CEPH_CONF
#   rbd_size IMAGE        size in bytes of RBD image IMAGE of pool rbd
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
	CL=$T/ceph
	# A signal must still run the EXIT trap that stops the daemons.
	trap 'exit 143' TERM INT HUP
	at_exit "'$top/scripts/ceph-cluster.sh' stop '$CL'"
	"$top/scripts/ceph-cluster.sh" start "$CL" || fail "the test cluster did not start"
	export CEPH_CONF=$CL/ceph.conf
}

rbd_size() {
	timeout 30 rbd info --format json "$1" | sed -n 's/.*"size":\([0-9]*\).*/\1/p'
}
