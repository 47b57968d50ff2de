# SPDX-License-Identifier: MIT
# Sourced by the img-nbd tests (tests/interop/test-nbd-*.sh), on top of
# interop-lib.sh:
#   nbd_start NAME ARGS...   start img-nbd with --fork and a pid file
#                            ($T/NAME.pid); it returns once listening; the
#                            server is killed on exit if still running
#   nbd_stop NAME            SIGTERM it and wait (at most 20 s) until it is gone
#   free_port                print a TCP port nothing listens on (127.0.0.1)
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
