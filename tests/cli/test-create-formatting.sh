#!/bin/bash
# SPDX-License-Identifier: MIT
# img create's "Formatting" line for vmdk, vpc, vhdx and vdi matches
# qemu-img's: the options in qemu's order with its defaults (compat6=off
# hwversion=undefined for vmdk, log_size and block_size for vhdx, static=off
# for vdi), which come from the library's option tables, not from the CLI.
. "$(dirname "$0")/functions.sh"
requires qemu-img
cd "$T" || exit 1

while IFS="|" read -r fmt opts size; do
	args="-f $fmt $opts $size"
	rm -f a.img b.img
	# shellcheck disable=SC2086
	"$IMG" create -f "$fmt" $opts a.img $size >img.out 2>&1 || { cat img.out; fail "create $args"; }
	# shellcheck disable=SC2086
	qemu-img create -f "$fmt" $opts b.img $size >q.out 2>&1 || fail "qemu-img $args"
	sed -i 's/b\.img/a.img/' q.out
	diff -u q.out img.out || fail "Formatting line differs for: $args"
done <<CASES
vmdk||1M
vmdk|-o subformat=monolithicFlat|4M
vmdk|-o adapter_type=lsilogic,zeroed_grain=on,hwversion=6|2M
vmdk|-o compat6=on,subformat=streamOptimized|1M
vpc||1M
vpc|-o subformat=fixed|4M
vpc|-o force_size=on,subformat=dynamic|3M
vhdx||1M
vhdx|-o block_size=1M,log_size=2M|8M
vhdx|-o subformat=fixed,block_state_zero=on|1M
vdi||1M
vdi|-o static=on|2M
CASES
exit 0
