#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert --profile: azure makes a fixed VHD with the exact size rounded
# up to a whole MiB (and says so) that qemu-img reads as the source plus
# zeroes; esxi makes a streamOptimized VMDK with the lsilogic adapter;
# hyperv a dynamic VHDX (when the vhdx driver is built); -O must agree with
# the profile and -o options add to it; an unknown profile is an error.
. "$(dirname "$0")/functions.sh"
requires qemu-img cmp
formats=$("$IMG" --help | grep '^Supported formats:')

head -c 10000000 /dev/urandom >"$T/src.raw"
"$IMG" convert --profile azure "$T/src.raw" "$T/a.vhd" >"$T/out" || fail "azure"
grep -q "rounded up to 10485760" "$T/out" || fail "azure: no size note: $(cat "$T/out")"
[ "$(stat -c %s "$T/a.vhd")" = $((10485760 + 512)) ] || fail "azure: not fixed or wrong size"
qemu-img info --output=json -f vpc "$T/a.vhd" | grep -q '"virtual-size": 10485760' ||
	fail "azure: qemu-img sees another size"
qemu-img convert -f vpc -O raw "$T/a.vhd" "$T/a.raw"
cmp -n 10000000 "$T/a.raw" "$T/src.raw" || fail "azure: data differs"
cmp -n 485760 -i 10000000:0 "$T/a.raw" /dev/zero || fail "azure: tail not zero"
# A whole MiB already: no note, same size.
head -c 2097152 "$T/src.raw" >"$T/s2.raw"
"$IMG" convert --profile azure "$T/s2.raw" "$T/b.vhd" >"$T/out" || fail "azure 2M"
[ -s "$T/out" ] && fail "azure 2M: unexpected note: $(cat "$T/out")"
[ "$(stat -c %s "$T/b.vhd")" = $((2097152 + 512)) ] || fail "azure 2M size"

"$IMG" convert --profile esxi "$T/src.raw" "$T/e.vmdk" || fail "esxi"
qemu-img compare -f raw -F vmdk "$T/src.raw" "$T/e.vmdk" >/dev/null || fail "esxi: data differs"
head -c 2048 "$T/e.vmdk" | grep -a -q 'createType="streamOptimized"' || fail "esxi: not streamOptimized"
head -c 2048 "$T/e.vmdk" | grep -a -q 'ddb.adapterType = "lsilogic"' || fail "esxi: adapter"
"$IMG" convert --profile esxi -O vmdk -o hwversion=7 "$T/s2.raw" "$T/e2.vmdk" || fail "esxi -O -o"
head -c 2048 "$T/e2.vmdk" | grep -a -q 'ddb.virtualHWVersion = "7"' || fail "esxi: -o ignored"

if [[ "$formats" == *vhdx* ]]; then
	"$IMG" convert --profile hyperv "$T/src.raw" "$T/h.vhdx" || fail "hyperv"
	qemu-img compare -f raw -F vhdx "$T/src.raw" "$T/h.vhdx" >/dev/null || fail "hyperv: data differs"
fi

expect_exit 1 "$IMG" convert --profile esxi -O qcow2 "$T/s2.raw" "$T/x"
grep -q "writes vmdk, not qcow2" "$T/.err" || fail "conflict: $(cat "$T/.err")"
expect_exit 1 "$IMG" convert --profile gcp "$T/s2.raw" "$T/x"
grep -q "unknown profile 'gcp'" "$T/.err" || fail "unknown: $(cat "$T/.err")"
echo ok
