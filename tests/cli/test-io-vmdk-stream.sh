#!/bin/bash
# SPDX-License-Identifier: MIT
# Reads of a streamOptimized VMDK through the core's .map path: a grain
# still being assembled in memory reads back what was written before any
# flush (the driver maps it as an in-memory file), the grains already
# compressed and appended read back too, and qemu-io reads the flushed
# file the same. A qemu-img image whose size ends inside its last grain
# (QEMU compresses only that grain's guest bytes) reads like its source.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io cmp
cd "$T" || exit 1

"$IMG" create -q -f vmdk -o subformat=streamOptimized s.vmdk 1M ||
	fail "create"
"$IMG" io -f vmdk -c 'write -P 0x11 0 4k' -c 'read -P 0x11 0 4k' \
	-c 'read -P 0 4k 60k' -c 'write -P 0x22 64k 4k' \
	-c 'read -P 0x11 0 4k' -c 'read -P 0 4k 60k' \
	-c 'read -P 0x22 64k 4k' -c 'read -P 0 68k 60k' s.vmdk >io.out 2>&1 ||
	{ cat io.out >&2; fail "img io reads of the written grains"; }
qemu-io -f vmdk -c 'read -P 0x11 0 4k' -c 'read -P 0 4k 60k' \
	-c 'read -P 0x22 64k 4k' -c 'read -P 0 68k 956k' s.vmdk >q.out 2>&1 ||
	{ cat q.out >&2; fail "qemu-io reads of img's grains"; }
grep -q "Pattern verification failed" q.out && fail "qemu-io reads other data"

head -c $((1048576 + 4608)) /dev/urandom >p.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized p.raw p.vmdk ||
	fail "qemu-img convert"
"$IMG" convert -f vmdk -O raw p.vmdk back.raw || fail "img convert"
cmp p.raw back.raw || fail "the last, partial grain reads wrong"
exit 0
