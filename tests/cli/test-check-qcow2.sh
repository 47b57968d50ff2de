#!/bin/bash
# SPDX-License-Identifier: MIT
# img check on qcow2: output and exit codes identical to qemu-img check for
# clean images, for leaked clusters (exit 3, repaired by -r leaks) and for a
# corrupted refcount (exit 2).
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io python3
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

same_check() { # args...: compare stdout, stderr shape and exit code
	local rc1 rc2
	"$IMG" check "$@" >img.out 2>img.err
	rc1=$?
	qemu-img check "$@" >q.out 2>q.err
	rc2=$?
	[ "$rc1" = "$rc2" ] || fail "check $*: exit $rc1, qemu-img $rc2"
	diff -u q.out img.out || fail "check $* output differs"
}

qemu-img create -q -f qcow2 a.qcow2 64M
qemu-io -c 'write -P 0xab 0 4k' -c 'write -P 1 1M 64k' a.qcow2 >/dev/null
same_check a.qcow2
same_check --output=json a.qcow2
same_check -q a.qcow2
qemu-img create -q -f qcow2 e.qcow2 1G
same_check e.qcow2
same_check --output=json e.qcow2

# Leak: bump the refcount of a free cluster past the end of the file.
python3 - a.qcow2 <<'PY' || fail "could not make a leak"
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(104)
cluster_bits = struct.unpack(">I", h[20:24])[0]
rt_off = struct.unpack(">Q", h[48:56])[0]
f.seek(rt_off)
rb = struct.unpack(">Q", f.read(8))[0]
size = f.seek(0, 2)
idx = size >> cluster_bits
f.seek(rb + 2 * idx)
f.write(struct.pack(">H", 1))
f.seek(size + (1 << cluster_bits) - 1)
f.write(b"\0")
PY
cp a.qcow2 b.qcow2
same_check a.qcow2
"$IMG" check a.qcow2 >/dev/null 2>&1
[ $? = 3 ] || fail "leak exit code"
same_check --output=json a.qcow2
"$IMG" check -r leaks a.qcow2 >img.out 2>&1
rc=$?
qemu-img check -r leaks b.qcow2 >q.out 2>&1
[ $rc = $? ] || fail "check -r leaks exit code"
sed -i 's/b\.qcow2/a.qcow2/' q.out
diff -u q.out img.out || fail "check -r leaks output differs"
same_check a.qcow2

# Corruption: refcount of an in-use cluster (the L1 table's) set to 0.
qemu-img create -q -f qcow2 c.qcow2 64M
qemu-io -c 'write 0 64k' c.qcow2 >/dev/null
python3 - c.qcow2 <<'PY' || fail "could not corrupt"
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(104)
cluster_bits = struct.unpack(">I", h[20:24])[0]
l1_off = struct.unpack(">Q", h[40:48])[0]
rt_off = struct.unpack(">Q", h[48:56])[0]
f.seek(rt_off)
rb = struct.unpack(">Q", f.read(8))[0]
f.seek(rb + 2 * (l1_off >> cluster_bits))
f.write(struct.pack(">H", 0))
PY
"$IMG" check c.qcow2 >/dev/null 2>&1
[ $? = 2 ] || fail "corruption exit code"
same_check --output=json c.qcow2
same_check c.qcow2
cp c.qcow2 d.qcow2
"$IMG" check -r all c.qcow2 >img.out 2>&1
rc=$?
qemu-img check -r all d.qcow2 >q.out 2>&1
[ $rc = $? ] || fail "check -r all exit code"
diff -u <(grep -v '^Repairing\|^ERROR\|^Rebuilding' q.out) \
	<(grep -v '^Repairing\|^ERROR\|^Rebuilding' img.out) || fail "check -r all output differs"
same_check c.qcow2

expect_exit 1 "$IMG" check missing.qcow2
exit 0
