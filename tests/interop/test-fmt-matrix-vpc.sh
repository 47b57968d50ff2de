#!/bin/bash
# SPDX-License-Identifier: MIT
# The round-trip matrix (fm_matrix in tests/interop/fmt-matrix.sh) for
# the sources VHD fixed and dynamic.
. "$(dirname "$0")/fmt-matrix.sh"
fm_matrix_test \
	"vpc:subformat=fixed,force_size=on" \
	"vpc:subformat=dynamic,force_size=on"
