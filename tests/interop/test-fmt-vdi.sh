#!/bin/bash
# SPDX-License-Identifier: MIT
# VDI against qemu-img, for sparse, random and zero-heavy contents
# (tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): static and dynamic images made by img and by
# qemu-img read identically through both and pass qemu-img check. Then:
# img's files match qemu-img's byte for byte but for the two UUIDs, and
# qemu-io writes into an img-made image (and the reverse) stay readable and
# check clean.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vdi
fm_contents

for c in sparse random zero; do
	tcase fm_direct $c "vdi:static=off" "vdi:static=on"
done

same_bytes() {
	local st
	for st in off on; do
		ctx="same bytes static=$st"
		for c in sparse zero; do
			rm -f "$T/b1.vdi" "$T/b2.vdi"
			must "$IMG" convert -f raw -O vdi -o static=$st "$T/c-$c.raw" "$T/b1.vdi"
			must qemu-img convert -f raw -O vdi -o static=$st "$T/c-$c.raw" "$T/b2.vdi"
			cmp -l "$T/b1.vdi" "$T/b2.vdi" | awk '$1 < 393 || $1 > 424 { bad = 1 } END { exit bad }' ||
				fail "[$ctx $c] files differ outside the UUIDs"
		done
	done
}

writes() {
	ctx="qemu-io writes into img's image"
	must "$IMG" create -q -f vdi "$T/w.vdi" 5M
	must qemu-io -f vdi -c 'write -P 0x11 1000 70000' -c 'write -P 0x22 4M 512' "$T/w.vdi"
	must "$IMG" io -f vdi -c 'read -P 0x11 1000 70000' -c 'read -P 0x22 4M 512' -c 'read -P 0 0 1000' "$T/w.vdi"
	must "$IMG" io -f vdi -c 'write -P 0x33 2M 4096' "$T/w.vdi"
	must qemu-io -f vdi -c 'read -P 0x33 2M 4096' -c 'read -P 0x11 1000 70000' "$T/w.vdi"
	qcheck "$T/w.vdi" -f vdi
	icheck "$T/w.vdi" -f vdi
}
tcase same_bytes
tcase writes
finish
