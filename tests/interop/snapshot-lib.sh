# SPDX-License-Identifier: MIT
# Sourced by the internal-snapshot interop tests (test-qcow2-snapshot*.sh):
# the cases they run, each against qemu-img 7.2 (see those files).
. "$(dirname "${BASH_SOURCE[0]}")/interop-lib.sh"
need_format qcow2
requires python3
export TZ=UTC

f=$T/s.qcow2

# Listings must be byte-identical.
same_listing() {
	"$IMG" snapshot -l "$f" >"$T/l.img" 2>&1 || fail "[$ctx] img snapshot -l failed"
	qemu-img snapshot -l "$f" >"$T/l.qemu" 2>&1 || fail "[$ctx] qemu-img snapshot -l failed"
	diff -u "$T/l.qemu" "$T/l.img" >&2 || fail "[$ctx] snapshot -l differs"
	"$IMG" info "$f" >"$T/i.img" && qemu-img info "$f" >"$T/i.qemu" ||
		fail "[$ctx] info failed"
	diff -u "$T/i.qemu" "$T/i.img" >&2 || fail "[$ctx] info differs"
	"$IMG" info --output=json "$f" >"$T/j.img" &&
		qemu-img info --output=json "$f" >"$T/j.qemu" || fail "[$ctx] info json failed"
	# actual-size may differ by what each one's host I/O left allocated
	diff -u <(grep -v actual-size "$T/j.qemu") <(grep -v actual-size "$T/j.img") >&2 ||
		fail "[$ctx] info --output=json differs"
}

# img makes the snapshots; qemu-img checks, lists, applies and deletes them.
img_made() {
	local opts=$1 cs=$2
	ctx="img-made $opts"
	rm -f "$f"
	must "$IMG" create -q -f qcow2 -o "$opts" "$f" 8M
	qemu_ops "$f" qcow2 "write -P 0x11 0 $((5 * cs + 7))" "write -P 0x12 4M $cs"
	must "$IMG" snapshot -c one "$f"
	qemu_ops "$f" qcow2 "write -P 0x21 $((2 * cs)) $((4 * cs))" "write -z 4M $cs"
	must "$IMG" snapshot -c "two words" "$f"
	must "$IMG" snapshot -c one "$f" # a duplicate name, as qemu-img allows
	qemu_ops "$f" qcow2 "write -P 0x31 0 $cs" "discard $((3 * cs)) $cs"
	qcheck "$f"
	icheck "$f"
	same_listing
	must qemu-img snapshot -a one "$f"
	qemu_ops "$f" qcow2 "read -P 0x11 0 $((5 * cs + 7))" "read -P 0 $((5 * cs + 7)) 100" \
		"read -P 0x12 4M $cs"
	qcheck "$f"
	must qemu-img snapshot -a "two words" "$f"
	qemu_ops "$f" qcow2 "read -P 0x11 0 $((2 * cs))" "read -P 0x21 $((2 * cs)) $((4 * cs))" \
		"read -P 0 4M $cs"
	must qemu-img snapshot -d one "$f" # the first of that name
	expect_exit 1 "$IMG" snapshot -d 1 "$f" # names only, as qemu-img
	qcheck "$f"
	icheck "$f"
	same_listing
	# img applies and deletes what is left; qemu checks.
	must "$IMG" snapshot -a 3 "$f"
	qemu_ops "$f" qcow2 "read -P 0x11 0 $cs" "read -P 0x21 $((2 * cs)) $cs"
	must "$IMG" snapshot -d "two words" "$f"
	must "$IMG" snapshot -d one "$f"
	qcheck "$f"
	[ -z "$("$IMG" snapshot -l "$f")" ] || fail "[$ctx] snapshots left"
	qemu-img info "$f" | grep -q "Snapshot list" && fail "[$ctx] qemu still lists snapshots"
	true
}

# qemu-img makes the snapshots; img lists, applies and deletes them.
qemu_made() {
	local opts=$1 cs=$2
	ctx="qemu-made $opts"
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o "$opts" "$f" 8M
	qemu_ops "$f" qcow2 "write -P 0x41 0 $((3 * cs))"
	must qemu-img snapshot -c base "$f"
	qemu_ops "$f" qcow2 "write -P 0x42 $cs $((3 * cs))"
	must qemu-img snapshot -c next "$f"
	qemu_ops "$f" qcow2 "write -P 0x43 0 $cs"
	same_listing
	# img writes over shared clusters: the snapshots must not change.
	img_ops "$f" qcow2 "write -P 0x44 $((cs / 2)) $((4 * cs))"
	qcheck "$f"
	must "$IMG" snapshot -a base "$f"
	qemu_ops "$f" qcow2 "read -P 0x41 0 $((3 * cs))" "read -P 0 $((3 * cs)) $cs"
	qcheck "$f"
	must "$IMG" snapshot -d base "$f"
	qcheck "$f"
	must qemu-img snapshot -a next "$f"
	qemu_ops "$f" qcow2 "read -P 0x41 0 $cs" "read -P 0x42 $cs $((3 * cs))"
	must "$IMG" snapshot -d next "$f"
	qcheck "$f"
	icheck "$f"
}

# Set the VM state size of snapshot entry 0 (32-bit field and the 64-bit
# one in the extra data).
set_vm_state_size() {
	python3 - "$1" "$2" <<'EOF'
import struct, sys
path, size = sys.argv[1], int(sys.argv[2])
with open(path, 'r+b') as fh:
    h = fh.read(72)
    off = struct.unpack('>Q', h[64:72])[0]
    fh.seek(off)
    e = fh.read(40)
    assert struct.unpack('>I', e[36:40])[0] >= 8
    fh.seek(off + 32)
    fh.write(struct.pack('>I', size))
    fh.seek(off + 40)
    fh.write(struct.pack('>Q', size))
EOF
}

vm_state() {
	ctx="vm state"
	rm -f "$f"
	must qemu-img create -q -f qcow2 "$f" 4M
	qemu_ops "$f" qcow2 "write -P 0x51 0 64k" "write -b -P 0x5a 0 192k"
	must qemu-img snapshot -c vm "$f"
	set_vm_state_size "$f" 196608 || fail "[$ctx] cannot patch the snapshot table"
	qcheck "$f"
	same_listing
	"$IMG" snapshot -l "$f" | grep -q "192 KiB" || fail "[$ctx] VM SIZE not shown"
	# Other snapshots come and go; the active VM state area is dropped by
	# an apply of a snapshot without one.
	must "$IMG" snapshot -c other "$f"
	qemu_ops "$f" qcow2 "write -P 0x52 0 64k" "write -b -P 0x66 0 64k"
	must "$IMG" snapshot -c third "$f"
	must "$IMG" snapshot -d other "$f"
	must "$IMG" snapshot -a third "$f"
	must "$IMG" snapshot -d third "$f"
	qcheck "$f"
	icheck "$f"
	must "$IMG" snapshot -a vm "$f"
	qemu_ops "$f" qcow2 "read -P 0x51 0 64k" "read -b -P 0x5a 0 192k"
	qcheck "$f"
	same_listing
	must "$IMG" snapshot -d vm "$f"
	qcheck "$f"
}

# Errors and exit codes as qemu-img's.
errors() {
	ctx="errors"
	rm -f "$f"
	must "$IMG" create -q -f qcow2 "$f" 1M
	for tool in "$IMG" qemu-img; do
		expect_exit 1 "$tool" snapshot -a nope "$f"
		grep -q "Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory" "$T/.err" ||
			fail "[$ctx] $tool -a message: $(cat "$T/.err")"
		expect_exit 1 "$tool" snapshot -d nope "$f"
		grep -q "Could not delete snapshot 'nope': snapshot not found" "$T/.err" ||
			fail "[$ctx] $tool -d message"
		expect_exit 1 "$tool" snapshot -l -c x "$f"
		grep -q "Cannot mix '-l', '-a', '-c', '-d'" "$T/.err" || fail "[$ctx] $tool mix"
		expect_exit 0 "$tool" snapshot "$f"
		expect_exit 0 "$tool" snapshot -l "$f"
		[ -s "$T/.out" ] && fail "[$ctx] $tool lists snapshots of an image without any"
	done
	must qemu-img create -q -f raw "$T/r.raw" 1M
	expect_exit 1 "$IMG" snapshot -f raw -c x "$T/r.raw"
	grep -q "Could not create snapshot 'x': -95 (Operation not supported)" "$T/.err" ||
		fail "[$ctx] raw -c message: $(cat "$T/.err")"
	expect_exit 0 "$IMG" snapshot -f raw -l "$T/r.raw"
}


# img resize on images with snapshots, as qemu-img 7.2: v3 grows and
# shrinks (snapshots keep their size and contents), v2 refuses.
resized() {
	ctx="resize"
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o cluster_size=4096 "$f" 4M
	qemu_ops "$f" qcow2 "write -P 0x61 0 4M"
	must qemu-img snapshot -c small "$f"
	must "$IMG" resize -q "$f" 12M
	img_ops "$f" qcow2 "write -P 0x62 3M 6M"
	must "$IMG" snapshot -c big "$f"
	must "$IMG" resize -q --shrink "$f" 2M
	qcheck "$f"
	must qemu-img snapshot -a small "$f"
	qemu-img info "$f" | grep -q "(4194304 bytes)" || fail "[$ctx] size after -a small"
	qemu_ops "$f" qcow2 "read -P 0x61 0 4M"
	must qemu-img snapshot -a big "$f"
	qemu_ops "$f" qcow2 "read -P 0x61 0 3M" "read -P 0x62 3M 6M" "read -P 0 9M 3M"
	must "$IMG" snapshot -d small "$f"
	must "$IMG" snapshot -d big "$f"
	qcheck "$f"
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o compat=0.10 "$f" 1M
	must qemu-img snapshot -c x "$f"
	expect_exit 1 "$IMG" resize "$f" 2M
	grep -q "Can't resize a v2 image which has snapshots" "$T/.err" ||
		fail "[$ctx] v2 message: $(cat "$T/.err")"
}

# Snapshot table entries with unknown extra data (kept byte for byte) and
# with none (completed to QEMU's 24 bytes when img rewrites the table); and
# check -r all repairing a snapshot's refcounts that were knocked down.
extra_data() {
	ctx="extra data"
	rm -f "$f"
	must qemu-img create -q -f qcow2 -o cluster_size=4096 "$f" 1M
	qemu_ops "$f" qcow2 "write -P 0x71 0 64k"
	must qemu-img snapshot -c a "$f"
	must qemu-img snapshot -c b "$f"
	python3 - "$f" <<'EOF2' || fail "[$ctx] cannot rewrite the table"
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
nb, off = struct.unpack('>IQ', d[60:72])
p, t = off, b''
for k in range(nb):
    h = bytearray(d[p:p + 40])
    ex = struct.unpack('>I', h[36:40])[0]
    idl, nl = struct.unpack('>HH', h[12:16])
    x = d[p + 40:p + 40 + ex]
    rest = d[p + 40 + ex:p + 40 + ex + idl + nl]
    p = (p + 40 + ex + idl + nl + 7) & ~7
    x = x + b'\xde\xad\xbe\xef\x01\x02\x03\x04' if k == 0 else b''
    h[36:40] = struct.pack('>I', len(x))
    t += bytes(h) + x + rest
    t += b'\0' * (-len(t) % 8)
d[off:off + len(t)] = t
open(sys.argv[1], 'wb').write(d)
EOF2
	# v3 entries need 16 bytes of extra data: both checks say so alike.
	"$IMG" check "$f" >"$T/c.img" 2>&1
	[ $? = 2 ] || fail "[$ctx] img check: not exit 2 on an incomplete entry"
	qemu-img check "$f" >"$T/c.qemu" 2>&1
	diff -u "$T/c.qemu" "$T/c.img" >&2 || fail "[$ctx] check output differs"
	must "$IMG" snapshot -c c "$f"
	must "$IMG" snapshot -d b "$f"
	qcheck "$f"
	python3 - "$f" <<'EOF2' || fail "[$ctx] extra data not as expected"
import struct, sys
d = open(sys.argv[1], 'rb').read()
nb, off = struct.unpack('>IQ', d[60:72])
assert nb == 2, nb
ex = struct.unpack('>I', d[off + 36:off + 40])[0]
assert ex == 32 and d[off + 64:off + 72] == b'\xde\xad\xbe\xef\x01\x02\x03\x04', ex
EOF2
	same_listing
	# Knock the refcount of the snapshot-only data down: check finds it,
	# -r all repairs it, qemu-img agrees.
	qemu_ops "$f" qcow2 "write -P 0x72 0 64k"
	must "$IMG" snapshot -d c "$f"
	python3 - "$f" <<'EOF2' || fail "[$ctx] cannot corrupt the refcount"
import struct, sys
fh = open(sys.argv[1], 'r+b')
d = fh.read()
nb, off = struct.unpack('>IQ', d[60:72])
l1 = struct.unpack('>Q', d[off:off + 8])[0]
l2 = struct.unpack('>Q', d[l1:l1 + 8])[0] & 0x00fffffffffffe00
data = struct.unpack('>Q', d[l2:l2 + 8])[0] & 0x00fffffffffffe00
rt = struct.unpack('>Q', d[48:56])[0]
rb = struct.unpack('>Q', d[rt:rt + 8])[0]
fh.seek(rb + 2 * (data // 4096))
fh.write(struct.pack('>H', 0))
EOF2
	expect_exit 2 "$IMG" check "$f"
	expect_exit 2 qemu-img check "$f"
	must "$IMG" check -r all "$f"
	qcheck "$f"
	must qemu-img snapshot -a a "$f"
	qemu_ops "$f" qcow2 "read -P 0x71 0 64k"
}
