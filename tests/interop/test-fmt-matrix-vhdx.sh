#!/bin/bash
# SPDX-License-Identifier: MIT
# The round-trip matrix (fm_matrix in tests/interop/fmt-matrix.sh) for
# the sources VHDX fixed and dynamic.
. "$(dirname "$0")/fmt-matrix.sh"
fm_matrix_test \
	"vhdx:subformat=fixed" \
	"vhdx:subformat=dynamic"
