#!/bin/bash
# SPDX-License-Identifier: MIT
# tests/no-uring (the launcher behind tests/run.sh's ":no-uring" unit pass)
# and what runs under it. For both refusals it emulates (ENOSYS: no io_uring
# in the kernel; EPERM: Docker's default seccomp profile), the unit test
# test-io-backend must see all three io_uring calls refused and libimg on
# psync; that test must fail when it is told to expect a refusal that is not
# there. Then img convert (buffered and O_DIRECT), img io and img-nbd run on
# the fallback and qemu-img/qemu-io check what they wrote; an explicit
# --aio io_uring must fail with a message naming io_uring, not hang or
# crash. Also the launcher's own refusals (usage 2, exec failure 127).
. "$(dirname "$0")/nbd-lib.sh"
L=$BUILD/tests/no-uring
unit=$BUILD/tests/test-io-backend
[ -x "$L" ] && [ -x "$unit" ] || fail "$L or $unit not built (make tests)"
cd "$T" || exit 1

expect_exit 2 "$L"
expect_exit 2 "$L" -e EIO true
expect_exit 127 "$L" ./missing
"$L" true
case $? in
0) ;;
77) skip "seccomp filters cannot be installed here" ;;
*) fail "no-uring true failed" ;;
esac

for e in ENOSYS EPERM; do
	"$L" -e $e "$unit" >unit-$e.log 2>&1 || {
		cat unit-$e.log
		fail "test-io-backend under no-uring -e $e"
	}
	grep -q "IMG_IO_AUTO chose psync" unit-$e.log ||
		fail "-e $e: libimg did not report psync: $(cat unit-$e.log)"
done
# Where rings work, a claimed refusal that is not there is caught.
"$unit" >unit-plain.log 2>&1 || fail "test-io-backend: $(cat unit-plain.log)"
if grep -q "io_uring_setup here: a ring" unit-plain.log; then
	IMG_TEST_NO_URING=EPERM "$unit" >unit-fake.log 2>&1 &&
		fail "test-io-backend passed expecting EPERM with io_uring working"
fi

qemu-img create -q -f qcow2 src.qcow2 16M
must qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 3M' \
	-c 'write -z 12M 1M' src.qcow2

for e in ENOSYS EPERM; do
	ctx=$e
	must "$L" -e $e "$IMG" convert -f qcow2 -O qcow2 src.qcow2 b-$e.qcow2
	qcheck b-$e.qcow2
	qcompare src.qcow2 b-$e.qcow2
	must "$L" -e $e "$IMG" convert -t none -T none -f qcow2 -O raw \
		src.qcow2 d-$e.raw
	qcompare -f qcow2 -F raw src.qcow2 d-$e.raw

	must "$L" -e $e "$IMG" io -f qcow2 -c 'write -P 0x33 8M 64k' \
		-c 'read -P 0x22 5M 4k' b-$e.qcow2
	must qemu-io -f qcow2 -c 'read -P 0x33 8M 64k' b-$e.qcow2
	must "$L" -e $e "$IMG" io -f qcow2 -i threads -c 'read -P 0x33 8M 4k' \
		b-$e.qcow2
	expect_exit 1 "$L" -e $e "$IMG" io -f qcow2 -i io_uring \
		-c 'read 0 4k' b-$e.qcow2
	grep -q "io_uring" "$T/.err" ||
		fail "-e $e: img io -i io_uring said: $(cat "$T/.err")"
done

ctx=img-nbd
sock=$T/nbd.sock
timeout 30 "$L" "$IMG_NBD" --fork --pid-file "$T/srv.pid" -f qcow2 \
	-k "$sock" b-EPERM.qcow2 || fail "img-nbd under no-uring did not start"
at_exit "kill -9 \$(cat '$T/srv.pid' 2>/dev/null) 2>/dev/null"
must qemu-io -f raw -c 'write -P 0x44 1M 256k' -c 'read -P 0x11 0 1M' \
	-c 'read -P 0x33 8M 64k' -c flush "nbd+unix:///?socket=$sock"
nbd_stop srv
must qemu-io -f qcow2 -c 'read -P 0x44 1M 256k' -c 'read -P 0x11 0 1M' \
	b-EPERM.qcow2
qcheck b-EPERM.qcow2
echo ok
