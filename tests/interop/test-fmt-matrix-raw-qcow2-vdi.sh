#!/bin/bash
# SPDX-License-Identifier: MIT
# The round-trip matrix (fm_matrix in tests/interop/fmt-matrix.sh) for
# the sources raw, qcow2, VDI static and dynamic.
. "$(dirname "$0")/fmt-matrix.sh"
fm_matrix_test \
	"raw:" \
	"qcow2:" \
	"vdi:static=on" \
	"vdi:static=off"
