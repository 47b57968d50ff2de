#!/bin/bash
# SPDX-License-Identifier: MIT
# The round-trip matrix (fm_matrix in tests/interop/fmt-matrix.sh) for
# the sources VMDK monolithicSparse, streamOptimized and twoGbMaxExtentSparse.
. "$(dirname "$0")/fmt-matrix.sh"
fm_matrix_test \
	"vmdk:subformat=monolithicSparse" \
	"vmdk:subformat=streamOptimized" \
	"vmdk:subformat=twoGbMaxExtentSparse"
