#!/bin/bash
# SPDX-License-Identifier: MIT
# A throwaway single-node Ceph cluster for tests: one monitor, one memstore
# OSD, cephx, 127.0.0.1 only, every file inside DIR, no ceph-mgr (not needed
# for rados/rbd I/O). Clients need only CEPH_CONF=DIR/ceph.conf.
#   scripts/ceph-cluster.sh start DIR   # prints nothing; ready when it returns
#   scripts/ceph-cluster.sh stop DIR    # kills only daemons of DIR's conf
# Exit 0 on success; on failure the cluster is stopped and the reason printed.
set -u

die() {
	echo "ceph-cluster: $*" >&2
	exit 1
}

# Daemons of this cluster: their command line names DIR's conf.
cluster_pids() {
	pgrep -f -- "-c $1/ceph.conf" || true
}

# Daemons double-fork: a dead one lingers as a zombie of PID 1 for a while.
alive() {
	grep -q '^State:[[:space:]]*[^Z]' "/proc/$1/status" 2>/dev/null
}

stop() {
	local dir=$1 pids p i
	pids=$(cluster_pids "$dir")
	[ -z "$pids" ] && return 0
	for p in $pids; do kill -TERM "$p" 2>/dev/null; done
	for i in $(seq 50); do
		local left=""
		for p in $pids; do alive "$p" && left="$left $p"; done
		[ -z "$left" ] && return 0
		sleep 0.1
	done
	for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	return 0
}

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
	local dir=$1 port fsid osd_uuid
	for b in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd; do
		command -v $b >/dev/null || die "$b not installed (scripts/install-deps.sh)"
	done
	mkdir -p "$dir" || die "cannot create $dir"
	dir=$(cd "$dir" && pwd)
	port=$(free_port) || die "no free port"
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log" "$dir/crash"
	cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool delete = true
osd pool default pg autoscale mode = off
mon data avail crit = 0
mon warn on pool no redundancy = false
paxos propose interval = 0.1
osd objectstore = memstore
memstore device bytes = ${CEPH_STORE_BYTES:-1073741824}
osd fast shutdown notify mon = false
osd data = $dir/osd
mon data = $dir/mon
[client]
admin socket =
log file = $dir/log/client.log
client mount timeout = 30
rados mon op timeout = 60
rados osd op timeout = 60
EOF
	local kr=$dir/keyring
	ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null &&
		ceph-authtool "$kr" --gen-key -n client.admin --cap mon 'allow *' \
			--cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' &&
		ceph-authtool "$kr" --gen-key -n osd.0 --cap mon 'allow profile osd' \
			--cap osd 'allow *' &&
		ceph-authtool "$kr" --gen-key -n client.test --cap mon 'profile rbd' \
			--cap osd 'profile rbd' ||
		die "ceph-authtool failed"
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
		"$dir/monmap" >/dev/null || die "monmaptool failed"
	ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" \
		--keyring "$kr" >"$dir/log/mkfs.log" 2>&1 || die "ceph-mon --mkfs failed: $(tail -n1 "$dir/log/mkfs.log")"
	ceph-mon -c "$dir/ceph.conf" -i a >>"$dir/log/start.log" 2>&1 ||
		die "ceph-mon did not start"
	ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" \
		--no-mon-config >"$dir/log/osd-mkfs.log" 2>&1 ||
		{ stop "$dir"; die "ceph-osd --mkfs failed: $(tail -n1 "$dir/log/osd-mkfs.log")"; }
	local c="ceph -c $dir/ceph.conf --connect-timeout 20"
	$c osd new "$osd_uuid" 0 >/dev/null 2>&1 || { stop "$dir"; die "ceph osd new failed"; }
	ceph-osd -c "$dir/ceph.conf" -i 0 >>"$dir/log/start.log" 2>&1 ||
		{ stop "$dir"; die "ceph-osd did not start"; }
	$c osd pool create rbd 8 8 >/dev/null 2>&1 || { stop "$dir"; die "pool create failed"; }
	timeout 60 rbd -c "$dir/ceph.conf" pool init rbd >/dev/null 2>&1 ||
		{ stop "$dir"; die "rbd pool init failed (PGs not active in 60 s)"; }
}

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
case $1 in
start) start "$2" ;;
stop) stop "$(cd "$2" 2>/dev/null && pwd || echo "$2")" ;;
*) die "usage: $0 start|stop DIR" ;;
esac
