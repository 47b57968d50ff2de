#!/bin/bash
# SPDX-License-Identifier: MIT
# Path confinement of VMDK extents (issue 13 item 4), without --untrusted:
# a descriptor whose extent name passes the text check (no "/" at the start,
# no "..") but reaches a file outside the image's directory through a
# symlink in it, to the file itself or to a directory above it, is refused
# by info, convert and img-nbd with "resolves outside the directory"; so is
# a symlink to /proc/self/root (a magic link). A symlink that stays inside
# the directory works and reads the extent's data, as qemu-img reads it.
. "$(dirname "$0")/functions.sh"
requires qemu-img cmp

M=1048576
mkdir -p "$T/img" "$T/outside/deep"
cd "$T/img" || fail "cd"
head -c $M /dev/urandom >"$T/outside/secret.raw"
cp "$T/outside/secret.raw" "$T/outside/deep/secret.raw"
head -c $M /dev/urandom >real.raw
qemu-img create -q -f vmdk -o subformat=monolithicFlat a.vmdk 1M || fail "vmdk"
grep -q '^RW 2048 FLAT "a-flat.vmdk" 0$' a.vmdk || fail "unexpected descriptor: $(cat a.vmdk)"
desc() { # NAME EXTENT: a copy of a.vmdk naming EXTENT
	sed "s|\"a-flat.vmdk\"|\"$2\"|" a.vmdk >"$1"
}

# To a file outside.
ln -s ../outside/secret.raw x-flat.vmdk
desc file.vmdk x-flat.vmdk
# To a directory outside, then a name inside it.
ln -s "$T/outside" sub
desc dir.vmdk sub/secret.raw
# Through a chain of two links, the second leaving.
ln -s ../outside/deep hop
ln -s hop hop2
desc chain.vmdk hop2/secret.raw
# A magic link.
ln -s /proc/self/root root-link
desc magic.vmdk "root-link$T/outside/secret.raw"
for f in file.vmdk dir.vmdk chain.vmdk magic.vmdk; do
	expect_exit 1 "$IMG" info "$f"
	grep -q "^img: Could not open '$f': vmdk: extent: io: '.*' resolves outside the directory '\.'" "$T/.err" ||
		fail "$f: info: $(cat "$T/.err")"
	expect_exit 1 "$IMG" convert -O raw "$f" "$T/out.raw"
	grep -q "resolves outside the directory" "$T/.err" || fail "$f: convert: $(cat "$T/.err")"
	# Named from another directory: the image's directory is the root.
	expect_exit 1 "$IMG" info "$T/img/$f"
	grep -q "resolves outside the directory '$T/img'" "$T/.err" ||
		fail "$f (absolute): $(cat "$T/.err")"
done
if [ -x "$IMG_NBD" ]; then
	expect_exit 1 timeout 20 "$IMG_NBD" -r -k "$T/n.sock" "$T/img/dir.vmdk"
	grep -q "resolves outside the directory" "$T/.err" || fail "img-nbd: $(cat "$T/.err")"
fi

# Inside: to a file, and through a directory link that stays inside.
ln -s real.raw in-flat.vmdk
desc in.vmdk in-flat.vmdk
mkdir data
cp real.raw data/real.raw
ln -s data dlink
desc in-dir.vmdk dlink/real.raw
for f in in.vmdk in-dir.vmdk; do
	expect_exit 0 "$IMG" info "$f"
	expect_exit 0 "$IMG" convert -O raw "$f" "$T/out.raw"
	cmp "$T/out.raw" real.raw || fail "$f: wrong data"
	qemu-img convert -O raw "$f" "$T/q.raw" || fail "qemu-img reads $f"
	cmp "$T/out.raw" "$T/q.raw" || fail "$f: img and qemu-img differ"
done
expect_exit 0 "$IMG" io -c 'write -P 0x5a 0 4k' in-dir.vmdk
cmp -n 4096 data/real.raw <(head -c 4096 /dev/zero | tr '\0' '\132') ||
	fail "write through the inside link"
# The descriptor with the extent named plainly still works from elsewhere.
cd / && expect_exit 0 "$IMG" compare "$T/img/a.vmdk" "$T/img/a-flat.vmdk"
exit 0
