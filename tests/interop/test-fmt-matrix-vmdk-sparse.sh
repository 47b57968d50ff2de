#!/bin/bash
# SPDX-License-Identifier: MIT
# The cross-format round-trip matrix (tests/interop/fmt-matrix.sh) for the
# sources VMDK monolithicSparse, streamOptimized and twoGbMaxExtentSparse: each, made by img from content
# mixing holes, random and zero data, converts by img to every writable
# format variant, reads the same through qemu-img compare, and converts
# back to raw byte-identical. One case per pair.
. "$(dirname "$0")/fmt-matrix.sh"
need_format vdi
need_format vmdk
need_format vpc
need_format vhdx
fm_contents
fm_matrix \
	"vmdk:subformat=monolithicSparse" \
	"vmdk:subformat=streamOptimized" \
	"vmdk:subformat=twoGbMaxExtentSparse"
finish
