#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd's process life: --fork returns once listening and writes the pid
# file (and fails with the image's error if it cannot open it); without -t
# the server leaves after its last client; systemd socket activation
# (LISTEN_PID/LISTEN_FDS); several --export/--export-ro exports; bad options
# exit 1; and SIGTERM during a write workload drains in-flight requests,
# exits 0 and leaves a qcow2 that qemu-img check finds clean, holding every
# write acknowledged before the signal.
. "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo nbdcopy python3

qemu-img create -q -f qcow2 "$T/a.qcow2" 64M
qemu-img create -q -f qcow2 "$T/b.qcow2" 16M

ctx="bad options and images"
expect_exit 1 "$IMG_NBD" -k "$T/x.sock" "$T/missing.qcow2"
expect_exit 1 "$IMG_NBD" --fork -k "$T/x.sock" "$T/missing.qcow2"
grep -q missing "$T/.err" || fail "[$ctx] no message: $(cat "$T/.err")"
expect_exit 1 "$IMG_NBD" --discard=bogus -k "$T/x.sock" "$T/a.qcow2"
expect_exit 1 "$IMG_NBD" -e 0 -k "$T/x.sock" "$T/a.qcow2"
expect_exit 1 "$IMG_NBD" -k "$T/x.sock" --export a="$T/a.qcow2" --export a="$T/b.qcow2"
expect_exit 1 "$IMG_NBD" -k "$T/x.sock" --tls-creds nope "$T/a.qcow2"
expect_exit 0 "$IMG_NBD" --help

ctx="--fork, pid file, several exports"
nbd_start f -t -k "$T/f.sock" --export a="$T/a.qcow2" --export-ro b="$T/b.qcow2"
pid=$(cat "$T/f.pid")
kill -0 "$pid" || fail "[$ctx] pid file names no live process"
must nbdinfo --list "nbd+unix:///?socket=$T/f.sock"
grep -q 'export="a"' "$T/.must" && grep -q 'export="b"' "$T/.must" ||
	fail "[$ctx] list: $(cat "$T/.must")"
nbdinfo --json "nbd+unix:///b?socket=$T/f.sock" | grep -q '"is_read_only": true' ||
	fail "[$ctx] b is not read-only"
nbdinfo --json "nbd+unix:///a?socket=$T/f.sock" | grep -q '"is_read_only": false' ||
	fail "[$ctx] a is read-only"
nbd_stop f
[ -e "$T/f.pid" ] && fail "[$ctx] pid file left behind"
[ -e "$T/f.sock" ] && fail "[$ctx] socket left behind"

ctx="without -t the server leaves after its last client"
"$IMG_NBD" -k "$T/o.sock" "$T/a.qcow2" &
opid=$!
at_exit "kill -9 $opid"
for _ in $(seq 100); do [ -S "$T/o.sock" ] && break; sleep 0.05; done
must nbdinfo "nbd+unix:///?socket=$T/o.sock"
for _ in $(seq 100); do kill -0 $opid 2>/dev/null || break; sleep 0.1; done
kill -0 $opid 2>/dev/null && { kill $opid; fail "[$ctx] still running"; }
wait $opid || fail "[$ctx] exit status $?"

ctx="socket activation"
python3 - "$IMG_NBD" "$T/act.sock" "$T/a.qcow2" "$T/act.pid" <<'PY' &
import os, socket, sys
nbd, path, image, pidfile = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
pid = os.fork()
if pid == 0:
    os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    env = dict(os.environ, LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
    os.execve(nbd, [nbd, "-t", "-x", "act", "-f", "qcow2", image], env)
open(pidfile, "w").write("%d\n" % pid)
PY
wait
at_exit "kill -9 \$(cat '$T/act.pid') 2>/dev/null"
must qemu-io -f raw -c "write -P 0x61 0 64k" -c "read -P 0x61 0 64k" "nbd+unix:///act?socket=$T/act.sock"
nbd_stop act

ctx="SIGTERM drains a write workload"
head -c $((32 << 20)) /dev/urandom >"$T/src.raw"
"$IMG_NBD" -t -k "$T/d.sock" -f qcow2 "$T/a.qcow2" 2>"$T/d.err" &
dpid=$!
at_exit "kill -9 $dpid"
for _ in $(seq 100); do [ -S "$T/d.sock" ] && break; sleep 0.05; done
fio_ok=false
if command -v fio >/dev/null && fio --enghelp 2>/dev/null | grep -qw nbd; then
	fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$T/d.sock" \
		--rw=randwrite --bs=64k --iodepth=32 --size=32M --time_based \
		--runtime=20 >"$T/fio.log" 2>&1 &
	fio_ok=true
else
	nbdcopy --connections=4 "$T/src.raw" "nbd+unix:///?socket=$T/d.sock" 2>/dev/null &
fi
cpid=$!
sleep 1.5
kill -TERM $dpid
wait $dpid
rc=$?
wait $cpid 2>/dev/null
[ $rc = 0 ] || fail "[$ctx] img-nbd exited $rc after SIGTERM: $(cat "$T/d.err")"
qcheck "$T/a.qcow2"
$fio_ok && echo "fio during SIGTERM: $(grep -c . "$T/fio.log") lines of log"

ctx="SIGTERM keeps every acknowledged write"
"$IMG_NBD" -t -k "$T/e.sock" -f qcow2 "$T/a.qcow2" 2>"$T/e.err" &
epid=$!
at_exit "kill -9 $epid"
for _ in $(seq 100); do [ -S "$T/e.sock" ] && break; sleep 0.05; done
python3 - "$(dirname "$0")/nbd-hostile.py" "$T/e.sock" $epid >"$T/acked" <<'PY' ||
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("h", sys.argv[1])
h = importlib.util.module_from_spec(spec)
spec.loader.exec_module(h)
c = h.Conn(sys.argv[2], timeout=30)
c.greet()
c.go(name=b"", meta=None)
sent = 0
try:
    for i in range(400):
        c.request(h.CMD_WRITE, i * 65536, 65536, cookie=i,
                  payload=bytes([i % 250 + 1]) * 65536)
        sent += 1
        if i == 100:
            os.kill(int(sys.argv[3]), signal.SIGTERM)
except OSError:
    pass
acked = 0
try:
    while True:
        ck, err, typ, fl, pl = c.read_reply()
        if not err:
            print(ck)
            acked += 1
except (h.Closed, OSError):
    pass
print("sent %d, acknowledged %d" % (sent, acked), file=sys.stderr)
sys.exit(0 if acked >= 50 else 1)
PY
	fail "[$ctx] client failed"
wait $epid || fail "[$ctx] img-nbd exited $?: $(cat "$T/e.err")"
qcheck "$T/a.qcow2"
args=()
while read -r i; do
	args+=(-c "read -P $((i % 250 + 1)) $((i * 65536)) 64k")
done <"$T/acked"
echo "$((${#args[@]} / 2)) acknowledged writes to verify"
must qemu-io -r -f qcow2 "${args[@]}" "$T/a.qcow2"
echo ok
