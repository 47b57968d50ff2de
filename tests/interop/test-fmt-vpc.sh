#!/bin/bash
# SPDX-License-Identifier: MIT
# VHD (vpc) against qemu-img, for sparse, random and zero-heavy contents
# (tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): fixed and dynamic disks made by img and by
# qemu-img read identically through both. Then: without force_size the
# size rounds up to the same CHS geometry as qemu-img's, and the files
# match qemu-img's byte for byte but for the UUID and checksum.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vpc
fm_contents

for c in sparse random zero; do
	tcase fm_direct $c "vpc:subformat=dynamic,force_size=on" \
		"vpc:subformat=fixed,force_size=on"
done

geometry() {
	local size sub
	for sub in dynamic fixed; do
		for size in 1M 100M 127G; do
			ctx="geometry $sub $size"
			rm -f "$T/g1.vhd" "$T/g2.vhd"
			must "$IMG" create -q -f vpc -o subformat=$sub "$T/g1.vhd" $size
			must qemu-img create -q -f vpc -o subformat=$sub "$T/g2.vhd" $size
			[ "$(stat -c %s "$T/g1.vhd")" = "$(stat -c %s "$T/g2.vhd")" ] ||
				fail "[$ctx] file sizes differ"
			[ "$("$IMG" info --output=json -f vpc "$T/g2.vhd" | grep -o '"virtual-size": [0-9]*')" = \
				"$(qemu-img info --output=json -f vpc "$T/g2.vhd" | grep -o '"virtual-size": [0-9]*')" ] ||
				fail "[$ctx] virtual sizes differ"
			# Differences only in the timestamp, checksum and UUID.
			# Fixed disks: the footers (the data area is a hole).
			if [ $sub = fixed ]; then
				tail -c 512 "$T/g1.vhd" >"$T/g1.f"
				tail -c 512 "$T/g2.vhd" >"$T/g2.f"
				mv "$T/g1.f" "$T/g1.vhd"
				mv "$T/g2.f" "$T/g2.vhd"
			fi
			cmp -l "$T/g1.vhd" "$T/g2.vhd" |
				awk -v t=$(($(stat -c %s "$T/g1.vhd") - 512)) \
					'{ p = $1 > t ? $1 - t : $1 }
					(p < 25 || p > 28) && (p < 65 || p > 84) { bad = 1 } END { exit bad }' ||
				fail "[$ctx] files differ outside checksum and UUID"
		done
	done
}
tcase geometry
finish
