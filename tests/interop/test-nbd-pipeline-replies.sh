#!/bin/bash
# SPDX-License-Identifier: MIT
# Replies to a client that sends all its reads before it reads a reply.
# img-nbd answers reads the page cache holds from the thread that reads the
# requests, without blocking: what the socket refuses (often half a reply)
# is left to the connection's reaper thread, and the reader starts no more
# reads meanwhile. nbd-pipeline.py sends 400 reads of 512 B to 256 KiB
# (about 30 MiB) on a qcow2 made by qemu-img from random data, over a unix
# socket and TCP, with simple and structured replies, with a small receive
# buffer and a pause before it reads anything: every read must be answered
# once with the image's bytes, and qemu-img compare must then find the
# export equal to the raw image.
. "$(dirname "$0")/nbd-lib.sh"
requires python3

head -c 16M /dev/urandom >"$T/r.raw" || fail "random input"
must qemu-img convert -f raw -O qcow2 "$T/r.raw" "$T/a.qcow2"
PORT=$(free_port)
nbd_start u -t -r -k "$T/s.sock" -f qcow2 "$T/a.qcow2"
nbd_start n -t -r -b 127.0.0.1 -p "$PORT" -f qcow2 "$T/a.qcow2"
cat "$T/a.qcow2" >/dev/null # in the page cache

seed=1
for where in "unix:$T/s.sock" "tcp:127.0.0.1:$PORT"; do
	for mode in simple structured; do
		timeout 120 python3 "$(dirname "$0")/nbd-pipeline.py" "$where" \
			$mode "$T/r.raw" 400 $seed ||
			fail "$where, $mode replies: wrong or missing replies"
		seed=$((seed + 1))
	done
done
must qemu-img compare -f raw -F raw "$T/r.raw" "nbd+unix:///?socket=$T/s.sock"
echo ok
