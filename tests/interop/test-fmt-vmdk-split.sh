#!/bin/bash
# SPDX-License-Identifier: MIT
# VMDK descriptor files with separate extents against qemu-img
# (monolithicFlat for sparse, random and zero-heavy contents;
# twoGbMaxExtentFlat and twoGbMaxExtentSparse on one image mixing the three;
# tests/interop/fmt-matrix.sh; the cross-format matrix is
# test-fmt-matrix-*.sh): made by img and by qemu-img, read identically
# through both. Then: extent names that leave the image's directory are
# refused.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vmdk
fm_contents

V=(vmdk:subformat=monolithicFlat vmdk:subformat=twoGbMaxExtentFlat vmdk:subformat=twoGbMaxExtentSparse)
for c in sparse random zero; do
	tcase fm_direct $c vmdk:subformat=monolithicFlat
done
tcase fm_direct mixed "${V[@]:1}"

unsafe_paths() {
	ctx="extent paths"
	printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "../x-flat.vmdk" 0\n' >"$T/evil.vmdk"
	expect_exit 1 "$IMG" info -f vmdk "$T/evil.vmdk"
	grep -q "outside the image's directory" "$T/.err" || fail "[$ctx] ..: $(cat "$T/.err")"
	printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "/etc/passwd" 0\n' >"$T/evil.vmdk"
	expect_exit 1 "$IMG" info -f vmdk "$T/evil.vmdk"
	grep -q "outside the image's directory" "$T/.err" || fail "[$ctx] absolute: $(cat "$T/.err")"
}

tcase unsafe_paths
finish
