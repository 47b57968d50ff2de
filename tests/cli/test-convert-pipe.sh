#!/bin/bash
# SPDX-License-Identifier: MIT
# A source whose size cannot be known (a pipe from <(...) or /dev/stdin, a
# named pipe, a character device) used to become a 0-byte image with exit 0.
# Every subcommand that opens an image must refuse it with a one-line reason
# and a non-zero exit, and a pipe as the output of convert or dd must never
# exit 0 with the data missing. qemu-img's answer is printed for comparison.
. "$(dirname "$0")/functions.sh"
requires timeout mkfifo

head -c 1048576 /dev/urandom >"$T/src.raw"
"$IMG" convert -f raw -O qcow2 "$T/src.raw" "$T/src.qcow2" ||
	fail "cannot make the qcow2 source"

if command -v qemu-img >/dev/null; then
	echo "qemu-img convert <(cat src.raw):"
	timeout 20 qemu-img convert -f raw -O qcow2 <(cat "$T/src.raw") \
		"$T/q.qcow2" 2>&1
	echo "  exit $?"
fi

# refused CMD...: CMD exits non-zero with one line naming the pipe; nothing
# may wait forever on a pipe nobody writes to.
refused() {
	local rc
	timeout 20 "$@" >"$T/out" 2>"$T/err"
	rc=$?
	[ "$rc" != 0 ] || fail "exit 0: $*"
	[ "$rc" != 124 ] || fail "hung: $*"
	grep -q "whose size cannot be known" "$T/err" ||
		{ cat "$T/out" "$T/err" >&2; fail "no reason given: $*"; }
	[ "$(wc -l <"$T/err")" = 1 ] ||
		{ cat "$T/err" >&2; fail "more than one line: $*"; }
}

# Process substitution (a pipe behind /dev/fd/N).
refused "$IMG" convert -f raw -O qcow2 <(cat "$T/src.raw") "$T/o.qcow2"
[ ! -s "$T/o.qcow2" ] || fail "convert from a pipe left an image"
refused "$IMG" convert -O raw <(cat "$T/src.qcow2") "$T/o.raw"
refused "$IMG" info <(cat "$T/src.raw")
refused "$IMG" info -f raw <(cat "$T/src.raw")
refused "$IMG" map -f raw <(cat "$T/src.raw")
refused "$IMG" check <(cat "$T/src.qcow2")
refused "$IMG" compare "$T/src.raw" <(cat "$T/src.raw")
refused "$IMG" dd -f raw -O raw if=<(cat "$T/src.raw") of="$T/dd.raw" bs=64k
refused "$IMG_NBD" -r -f raw -k "$T/nbd.sock" <(cat "$T/src.raw")

# /dev/stdin fed by a pipe; redirected from a file it is a regular file.
cat "$T/src.raw" | refused "$IMG" convert -f raw -O raw /dev/stdin "$T/o.raw"
cat "$T/src.raw" | refused "$IMG" info -f raw /dev/stdin
"$IMG" info -f raw /dev/stdin <"$T/src.raw" >"$T/out" ||
	fail "info of /dev/stdin redirected from a file"
grep -q "1 MiB" "$T/out" || fail "wrong size for /dev/stdin from a file"

# A named pipe with no writer: refused at once, not waited on.
mkfifo "$T/fifo"
refused "$IMG" info "$T/fifo"
refused "$IMG" convert -f raw -O qcow2 "$T/fifo" "$T/o2.qcow2"
refused "$IMG" compare "$T/fifo" "$T/src.raw"

# Character devices have no size either.
refused "$IMG" info -f raw /dev/zero
refused "$IMG" convert -f raw -O raw /dev/zero "$T/z.raw"

# A backing file that is a pipe is refused the same way.
"$IMG" create -f qcow2 -b "$T/fifo" -F raw -u "$T/ov.qcow2" 1M >/dev/null ||
	fail "create -u with a fifo backing"
refused "$IMG" convert -O raw "$T/ov.qcow2" "$T/o3.raw"

# Pipes as outputs: an error, never exit 0 with the data missing.
out_pipe() {
	local rc
	timeout 20 "$@" 2>"$T/err"
	rc=$?
	[ "$rc" != 0 ] || fail "exit 0 writing to a pipe: $*"
	[ "$rc" != 124 ] || fail "hung: $*"
	[ -s "$T/err" ] || fail "no message: $*"
}
out_pipe "$IMG" convert -O raw "$T/src.qcow2" >(cat >"$T/sink1")
out_pipe "$IMG" convert -n -O raw "$T/src.qcow2" >(cat >"$T/sink2")
"$IMG" dd -O raw if="$T/src.qcow2" of=/dev/stdout bs=64k 2>"$T/err" | cat >"$T/sink3"
[ "${PIPESTATUS[0]}" != 0 ] || fail "dd to a pipe exited 0"
if [ -s "$T/sink3" ] && ! cmp -s "$T/sink3" "$T/src.raw"; then
	fail "dd to a pipe wrote partial data"
fi

# Regular files and the same data still work.
"$IMG" convert -O raw "$T/src.qcow2" "$T/ok.raw" || fail "plain convert"
cmp "$T/ok.raw" "$T/src.raw" || fail "plain convert data"
echo ok
