#!/bin/bash
# SPDX-License-Identifier: MIT
# An unreachable Ceph cluster gives a clear error, never a hang: a conf whose
# monitor is a dead 127.0.0.1 port fails with "cannot connect" and the
# timeout, both with a timeout set on the name and with the default bound
# (30 s) when neither conf nor name sets one. No cluster is started. Also
# the strict name parser: malformed names and a key in the name are refused.
. "$(dirname "$0")/rbd-lib.sh"
rbd_need_lib

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/dead.conf" <<EOC
[global]
mon host = [v2:127.0.0.1:$port]
auth client required = none
log file = $T/client.log
admin socket =
EOC

ctx="timeout on the name"
expect_exit 1 timeout 50 "$IMG" info "rbd:rbd/x:conf=$T/dead.conf:client_mount_timeout=3"
grep -q "cannot connect to the Ceph cluster.*timeout 3 s" "$T/.err" ||
	fail "[$ctx] message: $(cat "$T/.err")"

ctx="default bound"
expect_exit 1 timeout 50 "$IMG" convert -O raw "$T/dead.conf" "rbd:rbd/x:conf=$T/dead.conf"
grep -q "cannot connect to the Ceph cluster.*timeout 30 s" "$T/.err" ||
	fail "[$ctx] message: $(cat "$T/.err")"

ctx="name parsing"
for bad in rbd:pool rbd:/img rbd:pool/ rbd:a/b/c/d 'rbd:pool/img@' \
	rbd:pool/img:conf 'rbd:pool/img:conf=' 'rbd:pool/img\' \
	"rbd:pool/img:conf=$T/dead.conf:conf=$T/dead.conf"; do
	expect_exit 1 "$IMG" info "$bad"
	grep -q "rbd: " "$T/.err" || fail "[$ctx] $bad: $(cat "$T/.err")"
done
expect_exit 1 "$IMG" info "rbd:pool/img:conf=$T/dead.conf:key=AQBsecret=="
grep -q "cephx key in the image name is refused" "$T/.err" || fail "[$ctx] key: $(cat "$T/.err")"
expect_exit 1 "$IMG" info "rbd:pool/img:conf=$T/dead.conf:no_such_option=1"
grep -q "unknown option" "$T/.err" || fail "[$ctx] option: $(cat "$T/.err")"
echo ok
