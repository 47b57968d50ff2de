#!/bin/bash
# SPDX-License-Identifier: MIT
# img amend on qcow2: -o help, qemu-img's refusals and messages (no -o,
# unknown and create-only options, bad widths and levels, formats without
# amend), and the settings info shows after amending compat, refcount_bits,
# lazy_refcounts, size and (beyond qemu-img) the backing file.
. "$(dirname "$0")/functions.sh"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

"$IMG" create -q -f qcow2 a.qcow2 4M || fail "create"
"$IMG" io -c "write -P 0x42 0 1M" -c "write -z 1M 1M" a.qcow2 >/dev/null

expect_exit 0 "$IMG" amend -f qcow2 -o help
grep -q "^Amend options for 'qcow2':$" .out || fail "help header"
grep -q "^  refcount_bits=<num>    - Width of a reference count entry in bits$" .out ||
	fail "help line"
expect_exit 1 "$IMG" amend a.qcow2
grep -q "Must specify options (-o)" .err || fail "no -o message"
expect_exit 1 "$IMG" amend -o foo=1 a.qcow2
grep -q "^img: Invalid parameter 'foo'$" .err || fail "unknown option"
expect_exit 1 "$IMG" amend -o cluster_size=4k a.qcow2
grep -q "^This option is only supported for image creation$" .err || fail "create-only hint"
expect_exit 1 "$IMG" amend -o refcount_bits=3 a.qcow2
expect_exit 1 "$IMG" amend -o compat=0.9 a.qcow2
grep -q "^img: Unknown compatibility level 0.9$" .err || fail "compat message"
expect_exit 1 "$IMG" amend -o lazy_refcounts=on,compat=0.10 a.qcow2
expect_exit 1 "$IMG" amend -o encrypt.new-secret=x a.qcow2
grep -q "encryption not present" .err || fail "encryption message"
touch r.raw
expect_exit 1 "$IMG" amend -f raw -o size=1M r.raw
grep -q "Format driver 'raw' does not support option amendment" .err || fail "raw message"

expect_exit 0 "$IMG" amend -o refcount_bits=1 a.qcow2
"$IMG" info a.qcow2 | grep -q "refcount bits: 1$" || fail "refcount bits"
expect_exit 0 "$IMG" amend -p -o refcount_bits=16,compat=0.10 a.qcow2
"$IMG" info a.qcow2 | grep -q "compat: 0.10$" || fail "downgrade"
expect_exit 0 "$IMG" amend -o compat=1.1,lazy_refcounts=on,size=8M a.qcow2
"$IMG" info a.qcow2 | grep -q "lazy refcounts: true$" || fail "lazy"
"$IMG" info a.qcow2 | grep -q "^virtual size: 8 MiB" || fail "size"
"$IMG" io -c "read -P 0x42 0 1M" -c "read -P 0 1M 7M" a.qcow2 >/dev/null || fail "data"
"$IMG" check a.qcow2 >/dev/null || fail "check"

"$IMG" create -q -f qcow2 b.qcow2 8M
expect_exit 1 "$IMG" amend -o backing_file=b.qcow2 a.qcow2
grep -q "backing format must be specified" .err || fail "backing without format"
expect_exit 0 "$IMG" amend -o backing_file=b.qcow2,backing_fmt=qcow2 a.qcow2
"$IMG" info a.qcow2 | grep -q "^backing file: b.qcow2$" || fail "backing name"
expect_exit 0 "$IMG" amend -o backing_file= a.qcow2
"$IMG" info a.qcow2 | grep -q "^backing file" && fail "backing not removed"
exit 0
