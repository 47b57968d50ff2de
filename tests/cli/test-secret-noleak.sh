#!/bin/bash
# SPDX-License-Identifier: MIT
# A LUKS passphrase never shows in a running img's /proc/PID/cmdline or
# /proc/PID/environ, nor in any output (also on errors); the process holds it
# in locked memory (VmLck > 0) when RLIMIT_MEMLOCK allows (not under ASan); --object
# secret,data= (which would put it in argv) is refused; --key-fd, --key-file
# and --object secret,file= all unlock the image.
. "$(dirname "$0")/functions.sh"

PASS="Zebra-Quantum-7731-$$"
printf '%s' "$PASS" >"$T/pw"
f="$T/enc.qcow2"
expect_exit 0 "$IMG" create --key-file "$T/pw" -f qcow2 \
	-o encrypt.format=luks,encrypt.iter-time=10 "$f" 1M
expect_exit 0 "$IMG" io --key-file "$T/pw" -c "write -P 0x61 0 4096" "$f"
expect_exit 0 "$IMG" io --object "secret,id=s0,file=$T/pw" \
	--image-opts "driver=qcow2,file.filename=$f,encrypt.key-secret=s0" \
	-c "read -P 0x61 0 4096"
grep -q "Pattern verification failed" "$T/.out" && fail "pattern (--object)"

# A live process: img io reading commands from a fifo, key on fd 3.
mkfifo "$T/cmds"
"$IMG" io --key-fd 3 "$f" 3<"$T/pw" <"$T/cmds" >"$T/io.out" 2>&1 &
pid=$!
at_exit "kill $pid"
exec 4>"$T/cmds"
echo "read -P 0x61 0 4096" >&4
for _ in $(seq 100); do
	grep -q "bytes at offset" "$T/io.out" && break
	sleep 0.1
done
grep -q "read 4096/4096 bytes" "$T/io.out" || fail "img io did not read: $(cat "$T/io.out")"
tr '\0' ' ' <"/proc/$pid/cmdline" >"$T/cmdline"
tr '\0' '\n' <"/proc/$pid/environ" >"$T/environ"
grep -qF "$PASS" "$T/cmdline" && fail "passphrase in /proc/PID/cmdline"
grep -qF "$PASS" "$T/environ" && fail "passphrase in /proc/PID/environ"
lck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")
# (ASan builds make mlock a no-op.)
if ! grep -qa __asan_init "$IMG" &&
	{ [ "$(ulimit -l)" = unlimited ] || [ "$(ulimit -l)" -ge 64 ]; }; then
	[ "${lck:-0}" -gt 0 ] || fail "no locked memory (VmLck $lck kB)"
fi
exec 4>&-
wait $pid || fail "img io exited $?"
grep -qF "$PASS" "$T/io.out" && fail "passphrase in the output"

# Errors and informational output do not print it either.
printf 'not-%s' "$PASS" >"$T/bad"
for cmd in "info $f" "check --key-file $T/bad $f" "convert --key-file $T/bad $f -O raw $T/x.raw" \
	"info --output=json $f" "map --key-file $T/pw $f" "check --key-file $T/pw $f"; do
	# shellcheck disable=SC2086
	"$IMG" $cmd >"$T/o" 2>&1 </dev/null
	grep -qF "$PASS" "$T/o" && fail "passphrase in the output of img $cmd"
done

expect_exit 1 "$IMG" info --object "secret,id=s0,data=$PASS" "$f"
grep -q "file=" "$T/.err" || fail "data= not refused clearly: $(cat "$T/.err")"
grep -qF "$PASS" "$T/.out" "$T/.err" && fail "passphrase echoed back"
echo ok
