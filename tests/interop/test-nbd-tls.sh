#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd with TLS against qemu-img/qemu-io's TLS client (GnuTLS): x509 with
# a CA made here by openssl (client certificates verified, then not), and
# PSK in qemu's keys.psk format, both through qemu-nbd's --object syntax and
# through --tls-cert/--tls-key/--tls-ca/--tls-psk-file. A plaintext client, a
# client without a certificate and a client with the wrong PSK are refused;
# nbdinfo sees the refusal as "TLS required".
. "$(dirname "$0")/nbd-lib.sh"
requires openssl

P=$T/pki
nbd_make_pki "$P"
mkdir -p "$P/psk" "$P/badpsk"
echo "qemu:$(openssl rand -hex 32)" >"$P/psk/keys.psk"
echo "qemu:$(openssl rand -hex 32)" >"$P/badpsk/keys.psk"

qemu-img create -q -f qcow2 "$T/a.qcow2" 16M
qemu-io -c "write -P 0x42 1M 1M" "$T/a.qcow2" >/dev/null

# client DIR KIND PORT QEMU-IO-ARGS...: qemu-io over TLS.
client() {
	local dir=$1 kind=$2 port=$3
	shift 3
	timeout 20 qemu-io --object "tls-creds-$kind,id=c0,dir=$dir,endpoint=client" \
		--image-opts "driver=nbd,host=127.0.0.1,port=$port,export=e,tls-creds=c0" "$@"
}

ctx="x509 via --object, client certificate required"
PORT=$(free_port)
nbd_start x -t -x e -b 127.0.0.1 -p "$PORT" \
	--object "tls-creds-x509,id=t0,dir=$P/srv,endpoint=server,verify-peer=on" \
	--tls-creds t0 "$T/a.qcow2"
client "$P/cli" x509 "$PORT" -c "read -P 0x42 1M 1M" -c "write -P 7 4M 64k" \
	-c "read -P 7 4M 64k" >"$T/o" 2>&1 || fail "[$ctx] $(cat "$T/o")"
client "$P/nocert" x509 "$PORT" -c "read 0 4k" >"$T/o" 2>&1 &&
	fail "[$ctx] a client without a certificate got in: $(cat "$T/o")"
timeout 20 qemu-io -f raw -c "read 0 4k" "nbd://127.0.0.1:$PORT/e" >"$T/o" 2>&1 &&
	fail "[$ctx] a plaintext client got in"
grep -qi "tls" "$T/o" || fail "[$ctx] plaintext refusal does not mention TLS: $(cat "$T/o")"
if command -v nbdinfo >/dev/null; then
	timeout 20 nbdinfo "nbd://127.0.0.1:$PORT/e" >"$T/o" 2>&1 &&
		fail "[$ctx] nbdinfo without TLS got in"
fi
nbd_stop x

ctx="x509 via --tls-cert/--tls-key, no client verification"
PORT=$(free_port)
nbd_start x2 -t -x e -b 127.0.0.1 -p "$PORT" --tls-cert "$P/srv/server-cert.pem" \
	--tls-key "$P/srv/server-key.pem" "$T/a.qcow2"
client "$P/nocert" x509 "$PORT" -c "read -P 7 4M 64k" >"$T/o" 2>&1 ||
	fail "[$ctx] $(cat "$T/o")"
nbd_stop x2

ctx="PSK via --object"
PORT=$(free_port)
nbd_start p -t -x e -b 127.0.0.1 -p "$PORT" \
	--object "tls-creds-psk,id=t0,dir=$P/psk,endpoint=server" --tls-creds t0 "$T/a.qcow2"
client "$P/psk" psk "$PORT" -c "read -P 0x42 1M 1M" -c "write -P 9 5M 64k" \
	>"$T/o" 2>&1 || fail "[$ctx] $(cat "$T/o")"
client "$P/badpsk" psk "$PORT" -c "read 0 4k" >"$T/o" 2>&1 &&
	fail "[$ctx] a client with the wrong key got in"
nbd_stop p

ctx="PSK via --tls-psk-file, qemu-img convert"
PORT=$(free_port)
nbd_start p2 -t -x e -b 127.0.0.1 -p "$PORT" --tls-psk-file "$P/psk/keys.psk" "$T/a.qcow2"
must timeout 30 qemu-img convert -O raw --object "tls-creds-psk,id=c0,dir=$P/psk,endpoint=client" \
	--image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=e,tls-creds=c0" "$T/out.raw"
nbd_stop p2
must qemu-img compare -f qcow2 -F raw "$T/a.qcow2" "$T/out.raw"
qcheck "$T/a.qcow2"
echo ok
