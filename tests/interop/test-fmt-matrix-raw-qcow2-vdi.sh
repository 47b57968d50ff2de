#!/bin/bash
# SPDX-License-Identifier: MIT
# The cross-format round-trip matrix (tests/interop/fmt-matrix.sh) for the
# sources raw, qcow2, VDI static and dynamic: each, made by img from content
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
	"raw:" \
	"qcow2:" \
	"vdi:static=on" \
	"vdi:static=off"
finish
