# SPDX-License-Identifier: MIT
# Sourced by the img-nbd tests (tests/interop/test-nbd-*.sh), on top of
# interop-lib.sh:
#   nbd_start NAME ARGS...   start img-nbd with --fork and a pid file
#                            ($T/NAME.pid); it returns once listening; the
#                            server is killed on exit if still running
#   nbd_stop NAME            SIGTERM it and wait (at most 20 s) until it is gone
#   free_port                print a TCP port nothing listens on (127.0.0.1)
#   nbd_make_pki DIR         a CA (DIR/ca-cert.pem) and, in qemu's x509 dir
#                            layout, DIR/srv (server cert for 127.0.0.1 and
#                            localhost), DIR/cli (client cert), DIR/nocert
#                            (CA only), made with openssl
. "$(dirname "${BASH_SOURCE[0]}")/interop-lib.sh"
[ -x "$IMG_NBD" ] || skip "img-nbd not built"

nbd_start() {
	local name=$1
	shift
	timeout 30 "$IMG_NBD" --fork --pid-file "$T/$name.pid" "$@" ||
		fail "img-nbd $* did not start"
	at_exit "kill -9 \$(cat '$T/$name.pid' 2>/dev/null) 2>/dev/null"
}

nbd_stop() {
	local pid
	pid=$(cat "$T/$1.pid" 2>/dev/null) || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	fail "img-nbd $1 (pid $pid) did not stop on SIGTERM"
}

free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			echo $p
			return
		fi
	done
	fail "no free TCP port"
}

nbd_make_pki() {
	local P=$1
	mkdir -p "$P/srv" "$P/cli" "$P/nocert"
	{
		openssl req -x509 -newkey rsa:2048 -nodes -keyout "$P/ca-key.pem" \
			-out "$P/ca-cert.pem" -days 2 -subj "/CN=img test CA" &&
			openssl req -newkey rsa:2048 -nodes \
				-keyout "$P/srv/server-key.pem" -out "$P/srv.csr" \
				-subj "/CN=localhost" &&
			printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$P/srv.ext" &&
			openssl x509 -req -in "$P/srv.csr" -CA "$P/ca-cert.pem" \
				-CAkey "$P/ca-key.pem" -CAcreateserial -days 2 \
				-out "$P/srv/server-cert.pem" -extfile "$P/srv.ext" &&
			openssl req -newkey rsa:2048 -nodes \
				-keyout "$P/cli/client-key.pem" -out "$P/cli.csr" \
				-subj "/CN=client" &&
			printf 'extendedKeyUsage=clientAuth\n' >"$P/cli.ext" &&
			openssl x509 -req -in "$P/cli.csr" -CA "$P/ca-cert.pem" \
				-CAkey "$P/ca-key.pem" -CAcreateserial -days 2 \
				-out "$P/cli/client-cert.pem" -extfile "$P/cli.ext"
	} >"$T/pki.log" 2>&1 || {
		cat "$T/pki.log"
		fail "openssl could not make certificates"
	}
	cp "$P/ca-cert.pem" "$P/srv/"
	cp "$P/ca-cert.pem" "$P/cli/"
	cp "$P/ca-cert.pem" "$P/nocert/"
}
