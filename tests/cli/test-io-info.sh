#!/bin/bash
# SPDX-License-Identifier: MIT
# img io -c info against qemu-io -c info on every format: the same format
# name, cluster size and vm state offset. qcow2 keeps VM state just past the
# guest range its L1 table covers, which depends on the cluster size, on
# extended L2 entries and on the virtual size (also after a resize); the
# other formats have no such place (0 bytes).
. "$(dirname "$0")/functions.sh"
requires qemu-img qemu-io
cd "$T" || exit 1

head3() { head -n 3 "$1" | sed -e 's/^qemu-io: //' -e 's/^img: //'; }
same_info() {
	local fmt=$1 f=$2
	"$IMG" io -f "$fmt" -c info "$f" >img.out 2>&1 || { cat img.out; fail "img io info $f"; }
	qemu-io -f "$fmt" -c info "$f" >q.out 2>&1 || fail "qemu-io info $f"
	diff -u <(head3 q.out) <(head3 img.out) || fail "info differs for $f ($fmt)"
}

while IFS="|" read -r opts size; do
	rm -f a.qcow2
	# shellcheck disable=SC2086
	qemu-img create -q -f qcow2 $opts a.qcow2 "$size" || fail "create $opts $size"
	same_info qcow2 a.qcow2
done <<CASES
|16M
-o cluster_size=512|1000M
-o cluster_size=4k|1G
-o cluster_size=2M|5G
-o cluster_size=2M,extended_l2=on|5G
-o extended_l2=on|3000000000
-o compat=0.10|7M
CASES
qemu-img resize -q a.qcow2 9G || fail "resize"
same_info qcow2 a.qcow2

for fmt in raw vmdk vpc vdi vhdx; do
	qemu-img create -q -f "$fmt" "x.$fmt" 4M || fail "create $fmt"
	same_info "$fmt" "x.$fmt"
done
exit 0
