#!/bin/bash
# SPDX-License-Identifier: MIT
# The round-trip matrix (fm_matrix in tests/interop/fmt-matrix.sh) for
# the sources VMDK monolithicFlat and twoGbMaxExtentFlat.
. "$(dirname "$0")/fmt-matrix.sh"
fm_matrix_test \
	"vmdk:subformat=monolithicFlat" \
	"vmdk:subformat=twoGbMaxExtentFlat"
