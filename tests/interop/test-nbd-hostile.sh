#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd against a hostile client: the cases in nbd-hostile.py (more than
# 150: bad magics, unknown options, commands and flags, zero, oversize and
# overflowing lengths, truncated payloads, disconnects mid-request, STARTTLS
# misuse, options after failed negotiation, long names) run while a second
# client does verified I/O. Then the server must still be alive, stop
# cleanly on SIGTERM, and leave a qcow2 that qemu-img check finds clean.
# test-nbd-hostile-slow.sh sources this file with HOSTILE_SET=slow for the
# cases that wait on server timeouts (stalled handshakes, a client that
# never reads, the connection cap).
. "$(dirname "${BASH_SOURCE[0]}")/nbd-lib.sh"
requires python3 openssl

qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
qemu-img create -q -f qcow2 "$T/ro.qcow2" 64M
qemu-img create -q -f qcow2 "$T/t.qcow2" 64M
nbd_make_pki "$T/pki"
nbd_start main -t --handshake-timeout 2 -k "$T/s.sock" -f qcow2 \
	--export exp="$T/a.qcow2" --export-ro ro="$T/ro.qcow2"
nbd_start capped -t -e 2 --handshake-timeout 2 -k "$T/c.sock" -r -x exp \
	-f qcow2 "$T/ro.qcow2"
nbd_start tls -t --handshake-timeout 2 -k "$T/t.sock" -x exp -f qcow2 \
	--tls-cert "$T/pki/srv/server-cert.pem" \
	--tls-key "$T/pki/srv/server-key.pem" "$T/t.qcow2"

python3 "$(dirname "${BASH_SOURCE[0]}")/nbd-hostile.py" "$T/s.sock" "$T/c.sock" \
	"$T/t.sock" "$T/pki/ca-cert.pem" "${HOSTILE_SET:-fast}" ||
	fail "hostile cases failed"
for s in main capped tls; do
	kill -0 "$(cat "$T/$s.pid")" || fail "server $s died"
done
nbd_stop main
nbd_stop capped
nbd_stop tls
qcheck "$T/a.qcow2"
qcheck "$T/ro.qcow2"
qcheck "$T/t.qcow2"
echo ok
