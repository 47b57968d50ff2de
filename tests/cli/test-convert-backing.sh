#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert of backing chains: flattening a chain of two (base + overlay
# with rewritten, zeroed and untouched ranges), and -B, which must give the
# same allocation as qemu-img convert -B (only what the overlay allocates,
# zero ranges written as zeroes) and compare equal to the source.
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -f qcow2 -c 'write -P 0x11 0 8M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -P 0x22 1M 1M' -c 'write -z 3M 1M' \
	-c 'write -P 0x33 10M 64k' -c 'write -z 12M 1M' \
	-c 'write -P 0 6M 64k' top.qcow2 >/dev/null

# flatten
expect_exit 0 "$IMG" convert -O qcow2 top.qcow2 flat.qcow2
qemu-img compare -q top.qcow2 flat.qcow2 || fail "flattened copy differs"
qemu-img info flat.qcow2 | grep -q 'backing file' && fail "flat copy has a backing file"
expect_exit 0 "$IMG" convert -O raw top.qcow2 flat.raw
qemu-img compare -q top.qcow2 flat.raw || fail "flattened raw differs"

# -B: allocation as qemu-img makes it
fields() {
	qemu-img map --output=json "$1" |
		sed -e 's/, "offset": [0-9]*//' -e 's/, "compressed": [a-z]*//'
}
expect_exit 0 "$IMG" convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 img.qcow2
qemu-img convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 qemu.qcow2
qemu-img compare -q top.qcow2 img.qcow2 || fail "-B copy differs"
fields img.qcow2 >img.map
fields qemu.qcow2 >qemu.map
diff -u qemu.map img.map || fail "-B allocation differs from qemu-img"
qemu-img info img.qcow2 | grep -q 'backing file: base.qcow2' || fail "no backing file"
qemu-img check -q img.qcow2 || fail "qemu-img check img.qcow2"

# -B with -S 0 and out of order writes still compares equal
expect_exit 0 "$IMG" convert -W -S 0 -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 w.qcow2
qemu-img compare -q top.qcow2 w.qcow2 || fail "-B -W -S 0 copy differs"

# -o backing_file/backing_fmt act as -B/-F
expect_exit 0 "$IMG" convert -O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 top.qcow2 o.qcow2
fields o.qcow2 >o.map
diff -u qemu.map o.map || fail "-o backing_file allocation differs"
exit 0
