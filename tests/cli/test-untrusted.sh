#!/bin/bash
# SPDX-License-Identifier: MIT
# --untrusted (issue 13 item 5), as a cloud runs it on an upload: every kind
# of reference to another file, each made by qemu-img where it can make one
# (qcow2 backing file and data_file, VMDK twoGbMaxExtentSparse and
# monolithicFlat descriptors and a monolithicSparse child naming its
# parent; VHD differencing by img create since qemu-img cannot; VHDX
# differencing from tests/interop/vhdx-diff.py) is refused by info and
# convert (and for a backing file, a data_file and a flat extent also by
# check, compare, map and dd), by img-nbd and by img-fuse with one line "img:
# untrusted: '<file>' names ..." and a non-zero exit, and by info
# --output=json with an "untrusted-refusal" field; without the flag the same
# images open. A self-contained image of each format (qcow2 plain and
# compressed, raw, VMDK monolithicSparse and streamOptimized, VHD fixed and
# dynamic, VHDX, VDI) passes with the same info, map and data as without the
# flag (and check, compare and dd on three of them). Caps: a qcow2 whose L1
# table (16 MiB) is under the default cap but above the untrusted one opens
# without the flag and is refused with it, a 2 TiB VDI (a block map of 8
# MiB, the cap) passes; a LUKS key slot asking for more PBKDF2 iterations than
# the untrusted cap is refused before any derivation.
. "$(dirname "$0")/functions.sh"
requires qemu-img python3 cmp

here=$(cd "$(dirname "$0")" && pwd)
cd "$T" || fail "cd"
M=1048576

# ---- images naming other files ----
qemu-img create -q -f qcow2 base.qcow2 4M || fail "base"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2 || fail "overlay"
qemu-img create -q -f qcow2 -o data_file=df.raw df.qcow2 4M || fail "data_file"
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 4M ||
	fail "twoGbMaxExtentSparse"
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 4M ||
	fail "monolithicFlat"
qemu-img create -q -f vmdk base.vmdk 4M || fail "vmdk parent"
qemu-img create -q -f vmdk -b base.vmdk -F vmdk child.vmdk || fail "vmdk child"
qemu-img create -q -f vpc -o force_size=on parent.vhd 4M || fail "vhd parent"
"$IMG" create -q -f vpc -b parent.vhd -F vpc child.vhd || fail "vhd child"
python3 "$here/../interop/vhdx-diff.py" "$T/vx" 512 || fail "vhdx-diff.py"

# FILE WHAT [all]: info and convert (with "all": every subcommand) refuse
# FILE, naming WHAT.
refused() {
	local f=$1 what=$2 all=${3:-} line="img: untrusted: '$1' names $2"
	"$IMG" info "$f" >/dev/null 2>&1 || fail "$f: info fails without --untrusted"
	expect_exit 1 "$IMG" info --untrusted "$f"
	[ "$(cat "$T/.err")" = "$line" ] || fail "$f: info says '$(cat "$T/.err")', not '$line'"
	[ ! -s "$T/.out" ] || fail "$f: info printed $(cat "$T/.out")"
	expect_exit 1 "$IMG" info --untrusted --output=json "$f"
	python3 - "$T/.out" "$f" "${line#img: }" <<'PY' || fail "$f: info json: $(cat "$T/.out")"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["untrusted-refusal"] == sys.argv[3], o
assert o["filename"] == sys.argv[2], o
assert "virtual-size" not in o, o
PY
	expect_exit 1 "$IMG" convert --untrusted -O raw "$f" out.raw
	grep -qxF "$line" "$T/.err" || fail "$f: convert: $(cat "$T/.err")"
	[ ! -e out.raw ] || fail "$f: convert left an output behind"
	[ "$all" ] || return 0
	expect_exit 1 "$IMG" check --untrusted "$f"
	grep -qxF "$line" "$T/.err" || fail "$f: check: $(cat "$T/.err")"
	expect_exit 2 "$IMG" compare --untrusted "$f" "$f" # qemu-img compare: 2 = error
	grep -qxF "$line" "$T/.err" || fail "$f: compare: $(cat "$T/.err")"
	expect_exit 1 "$IMG" map --untrusted "$f"
	grep -qxF "$line" "$T/.err" || fail "$f: map: $(cat "$T/.err")"
	expect_exit 1 "$IMG" dd --untrusted -O raw if="$f" of=out.raw
	grep -qxF "$line" "$T/.err" || fail "$f: dd: $(cat "$T/.err")"
	rm -f out.raw
}

refused over.qcow2 "a backing file 'base.qcow2'" all
refused df.qcow2 "a data file 'df.raw'" all
refused split.vmdk "an extent file 'split-s001.vmdk'"
refused flat.vmdk "an extent file 'flat-flat.vmdk'" all
refused child.vmdk "a backing file 'base.vmdk'"
refused child.vhd "a backing file 'parent.vhd'"
refused vx/c/child.vhdx "a backing file '../p/parent.vhdx'"

# The refusal comes before the reference is followed: a backing file that
# does not exist gives the same refusal, not "could not open".
qemu-img create -q -f qcow2 -b missing.qcow2 -F qcow2 -u dangling.qcow2 4M ||
	fail "dangling overlay"
expect_exit 1 "$IMG" info --untrusted --backing-chain dangling.qcow2
[ "$(cat "$T/.err")" = "img: untrusted: 'dangling.qcow2' names a backing file 'missing.qcow2'" ] ||
	fail "dangling: $(cat "$T/.err")"

# ---- self-contained images pass, exactly as without the flag ----
head -c $((4 * M)) /dev/urandom >data.raw
head -c $M /dev/zero | dd of=data.raw bs=64k seek=16 conv=notrunc status=none
cp data.raw clean.raw
qemu-img convert -f raw -O qcow2 data.raw clean.qcow2 || fail "qcow2"
qemu-img convert -c -f raw -O qcow2 data.raw clean-z.qcow2 || fail "qcow2 -c"
qemu-img convert -f raw -O vmdk data.raw clean.vmdk || fail "vmdk"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized data.raw \
	clean-stream.vmdk || fail "vmdk stream"
qemu-img convert -f raw -O vpc -o subformat=fixed,force_size=on data.raw \
	clean-fixed.vhd || fail "vhd fixed"
qemu-img convert -f raw -O vpc -o force_size=on data.raw clean.vhd ||
	fail "vhd dynamic"
qemu-img convert -f raw -O vhdx data.raw clean.vhdx || fail "vhdx"
qemu-img convert -f raw -O vdi data.raw clean.vdi || fail "vdi"
qemu-img dd -f raw -O raw bs=64k count=8 skip=4 if=data.raw of=dd-want.raw ||
	fail "qemu-img dd"
for f in clean.raw clean.qcow2 clean-z.qcow2 clean.vmdk clean-stream.vmdk \
	clean-fixed.vhd clean.vhd clean.vhdx clean.vdi; do
	fa=() # a fixed VHD probes as raw (as in QEMU): name its format
	[ $f = clean-fixed.vhd ] && fa=(-f vpc)
	for o in human json; do
		expect_exit 0 "$IMG" info "${fa[@]}" --output=$o "$f"
		cp "$T/.out" want
		expect_exit 0 "$IMG" info --untrusted "${fa[@]}" --output=$o "$f"
		cmp -s want "$T/.out" || fail "$f: info --output=$o differs with --untrusted"
	done
	grep -q untrusted-refusal "$T/.out" && fail "$f: clean image has a refusal"
	expect_exit 0 "$IMG" map "${fa[@]}" --output=json "$f"
	cp "$T/.out" want
	expect_exit 0 "$IMG" map --untrusted "${fa[@]}" --output=json "$f"
	cmp -s want "$T/.out" || fail "$f: map differs with --untrusted"
	expect_exit 0 "$IMG" convert --untrusted "${fa[@]}" -O raw "$f" out.raw
	cmp out.raw data.raw || fail "$f: convert --untrusted reads wrong data"
	case $f in clean.qcow2 | clean-stream.vmdk | clean-fixed.vhd) ;; *) continue ;; esac
	"$IMG" check "${fa[@]}" "$f" >/dev/null 2>&1
	expect_exit $? "$IMG" check --untrusted "${fa[@]}" "$f" # 63: no checks (raw, fixed VHD)
	expect_exit 0 "$IMG" compare --untrusted "${fa[@]}" "$f" data.raw
	expect_exit 0 "$IMG" dd --untrusted "${fa[@]}" -O raw bs=64k count=8 skip=4 if="$f" of=out.raw
	cmp out.raw dd-want.raw || fail "$f: dd --untrusted reads wrong data"
	rm -f out.raw
done
# --untrusted is for the source: convert may still give the output a backing.
expect_exit 0 "$IMG" convert --untrusted -O qcow2 -B base.qcow2 -F qcow2 clean.qcow2 out.qcow2
qemu-img info out.qcow2 | grep -q '^backing file: base.qcow2' || fail "convert -B"
# Only the commands that read an upload take it.
expect_exit 1 "$IMG" create --untrusted -f qcow2 x.qcow2 1M
grep -q "unrecognized option '--untrusted'" "$T/.err" || fail "create took --untrusted"
for c in info check convert compare map dd; do
	"$IMG" $c --help | grep -q -- '--untrusted' || fail "$c --help lacks --untrusted"
done

# ---- caps ----
# 512-byte clusters: one L1 entry covers 32 KiB, so 64 GiB needs 16 MiB of
# L1: under the default cap of 32 MiB, above the untrusted cap of 8 MiB.
qemu-img create -q -f qcow2 -o cluster_size=512 big-l1.qcow2 64G || fail "big L1"
expect_exit 0 "$IMG" info big-l1.qcow2
expect_exit 0 "$IMG" map big-l1.qcow2
expect_exit 1 "$IMG" info --untrusted big-l1.qcow2
[ "$(cat "$T/.err")" = "img: untrusted: 'big-l1.qcow2' asks for an L1 table of 16777216 bytes, above the limit of 8388608 for untrusted images" ] ||
	fail "L1 cap: $(cat "$T/.err")"
expect_exit 1 "$IMG" convert --untrusted -O raw big-l1.qcow2 out.raw
expect_exit 1 "$IMG" info --untrusted --output=json big-l1.qcow2
grep -q '"untrusted-refusal": "untrusted: .big-l1.qcow2. asks for an L1 table' "$T/.out" ||
	fail "L1 cap json: $(cat "$T/.out")"
qemu-img create -q -f vdi big.vdi 2T || fail "big vdi"
expect_exit 0 "$IMG" info --untrusted big.vdi

# A LUKS key slot asking for 5M PBKDF2 iterations (above the untrusted cap of
# 4M, below the default of 32M): refused at once with --untrusted.
printf 'pw' >pw
for try in 1 2 3 4 5; do # qemu-img 7.2 fails one LUKS create in four
	qemu-img create -q -f qcow2 --object secret,id=s,file=pw \
		-o encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10 \
		enc.qcow2 1M 2>/dev/null && break
done
[ -s enc.qcow2 ] || fail "luks create"
python3 - enc.qcow2 <<'PY' || fail "patch luks"
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
h = d.find(b'LUKS\xba\xbe')
assert h > 0
slot0 = h + 208                      # LUKS1 key slot 0: active, iterations
assert struct.unpack('>I', d[slot0:slot0 + 4])[0] == 0x00AC71F3
d[slot0 + 4:slot0 + 8] = struct.pack('>I', 5000000)
open(sys.argv[1], 'wb').write(d)
PY
expect_exit 1 timeout 20 "$IMG" convert --untrusted --key-file pw -O raw enc.qcow2 out.raw
grep -q "needs 5000000 PBKDF2 iterations, more than the limit of 4194304 for untrusted images" "$T/.err" ||
	fail "kdf cap: $(cat "$T/.err")"
expect_exit 1 "$IMG" convert --kdf-max-iter 1000 --key-file pw -O raw enc.qcow2 out.raw
grep -q "limit of 1000 (raise it with --kdf-max-iter)" "$T/.err" || fail "kdf: $(cat "$T/.err")"

# ---- img-nbd ----
if [ -x "$IMG_NBD" ]; then
	expect_exit 1 timeout 20 "$IMG_NBD" --untrusted -k "$T/n.sock" over.qcow2
	grep -qF "untrusted: 'over.qcow2' names a backing file 'base.qcow2'" "$T/.err" ||
		fail "img-nbd: $(cat "$T/.err")"
	[ ! -e "$T/n.sock" ] || fail "img-nbd listened on a refused image"
	expect_exit 1 timeout 20 "$IMG_NBD" --untrusted -k "$T/n.sock" --export-ro a=clean.qcow2 \
		--export-ro b=df.qcow2
	grep -qF "untrusted: 'df.qcow2' names a data file 'df.raw'" "$T/.err" ||
		fail "img-nbd export: $(cat "$T/.err")"
	timeout 20 "$IMG_NBD" --untrusted --fork --pid-file "$T/nbd.pid" -r -k "$T/n.sock" \
		clean.qcow2 || fail "img-nbd --untrusted refused a clean image"
	at_exit "kill \$(cat '$T/nbd.pid' 2>/dev/null) 2>/dev/null"
	timeout 20 qemu-img convert -f raw -O raw "nbd+unix:///?socket=$T/n.sock" out.raw ||
		fail "read from img-nbd"
	cmp out.raw data.raw || fail "img-nbd --untrusted serves wrong data"
	# Without -t the server exits after its last client.
	"$IMG_NBD" --help | grep -q -- '--untrusted' || fail "img-nbd --help"
fi

# ---- img-fuse ----
if [ -x "$IMG_FUSE" ]; then
	mkdir mnt
	expect_exit 1 timeout 20 "$IMG_FUSE" --untrusted -r flat.vmdk mnt
	grep -qF "untrusted: '$T/flat.vmdk' names an extent file 'flat-flat.vmdk'" "$T/.err" ||
		fail "img-fuse: $(cat "$T/.err")"
	"$IMG_FUSE" --help | grep -q -- '--untrusted' || fail "img-fuse --help"
	if [ "$(id -u)" = 0 ] && [ -w /dev/fuse ] && command -v fusermount3 >/dev/null; then
		at_exit "fusermount3 -u -z '$T/mnt'"
		timeout 20 "$IMG_FUSE" --untrusted -r clean.vhdx mnt ||
			fail "img-fuse --untrusted refused a clean image"
		cmp mnt/disk data.raw || fail "img-fuse --untrusted reads wrong data"
		fusermount3 -u mnt
	fi
fi
exit 0
