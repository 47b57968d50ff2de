#!/bin/bash
# SPDX-License-Identifier: MIT
# VMDK monolithicSparse against qemu-img, for sparse, random and zero-heavy
# contents, and with zeroed grains on one image mixing the three
# (tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): made by img and by qemu-img, read identically
# through both, qemu-img check clean. Then: img's file matches qemu-img's
# byte for byte but for the CID, and backing files (parentFileNameHint,
# parentCID) work in both directions.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vmdk
fm_contents

V=(vmdk:subformat=monolithicSparse vmdk:subformat=monolithicSparse,zeroed_grain=on)
for c in sparse random zero; do
	tcase fm_direct $c vmdk:subformat=monolithicSparse
done
tcase fm_direct mixed vmdk:subformat=monolithicSparse,zeroed_grain=on

same_bytes() {
	ctx="same bytes monolithicSparse"
	# The descriptor names the file: the same name in two directories.
	mkdir -p "$T/q" "$T/i"
	must qemu-img convert -f raw -O vmdk "$T/c-sparse.raw" "$T/q/b.vmdk"
	must "$IMG" convert -f raw -O vmdk "$T/c-sparse.raw" "$T/i/b.vmdk"
	# Only the descriptor (sector 1, with the CID) may differ.
	cmp -l "$T/q/b.vmdk" "$T/i/b.vmdk" | awk '$1 < 513 || $1 > 1024 { bad = 1 } END { exit bad }' ||
		fail "[$ctx] files differ outside the descriptor"
	cmp -n 512 "$T/q/b.vmdk" "$T/i/b.vmdk" || fail "[$ctx] headers differ"
}

backing() {
	ctx="backing img child of qemu parent"
	must qemu-img convert -f raw -O vmdk "$T/c-random.raw" "$T/p.vmdk"
	must "$IMG" create -q -f vmdk -b p.vmdk -F vmdk "$T/c.vmdk"
	must "$IMG" io -f vmdk -c 'write -P 0x42 70000 5000' "$T/c.vmdk"
	must qemu-io -f vmdk -c 'read -P 0x42 70000 5000' "$T/c.vmdk"
	python3 - "$T/c-random.raw" <<'PY' || fail "[$ctx] expected image"
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[70000:75000] = b'\x42' * 5000
open(sys.argv[1] + '.want1', 'wb').write(d)
PY
	must qemu-img compare -q -f vmdk -F raw "$T/c.vmdk" "$T/c-random.raw.want1"
	fm_back vmdk "$T/c.vmdk" "$T/flat1.raw"
	fm_same "$T/flat1.raw" "$T/c-random.raw.want1"
	grep -a -q "parentCID=$(grep -a -o 'CID=[0-9a-f]*' "$T/p.vmdk" | head -1 | cut -d= -f2)" "$T/c.vmdk" ||
		fail "[$ctx] parentCID is not the parent's CID"
	ctx="backing qemu child of img parent"
	must "$IMG" convert -f raw -O vmdk "$T/c-random.raw" "$T/p2.vmdk"
	must qemu-img create -q -f vmdk -b p2.vmdk -F vmdk "$T/c2.vmdk"
	must qemu-io -f vmdk -c 'write -P 0x43 1000 3000' "$T/c2.vmdk"
	must "$IMG" io -f vmdk -c 'read -P 0x43 1000 3000' "$T/c2.vmdk"
	"$IMG" compare -f vmdk -F raw "$T/c2.vmdk" "$T/c-random.raw" >/dev/null 2>&1 &&
		fail "[$ctx] compare ignored the write"
	python3 - "$T/c-random.raw" <<'PY' || fail "[$ctx] expected image"
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[1000:4000] = b'\x43' * 3000
open(sys.argv[1] + '.want', 'wb').write(d)
PY
	fm_back vmdk "$T/c2.vmdk" "$T/flat.raw"
	fm_same "$T/flat.raw" "$T/c-random.raw.want"
}

tcase same_bytes
tcase backing
finish
