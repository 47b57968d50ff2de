# SPDX-License-Identifier: MIT
# Sourced by the qcow2 bitmap interop tests (tests/interop/test-qcow2-bitmap*.sh),
# after interop-lib.sh:
#   want_dirty FILE BITMAP=RANGES...  QEMU (qemu-nbd -B, nbdinfo --map) must
#                                     read exactly RANGES ("off len ...") as
#                                     dirty in each BITMAP of FILE
#   bitmaps_of CMD...                 the "bitmaps" part of an info's output
#   same_info FILE                    qemu-img info and img info agree (human
#                                     bitmaps, and the whole JSON but sizes)
# The dirty ranges QEMU reads in FILE for each BITMAP=RANGES argument (one
# qemu-nbd serving them all) must be RANGES ("off len off len ...").
want_dirty() {
	local f=$1 sock=$T/nbd.sock a args=() got pid
	shift
	for a in "$@"; do args+=(-B "${a%%=*}"); done
	rm -f "$sock"
	timeout 60 qemu-nbd -r -f qcow2 "${args[@]}" -k "$sock" -t "$f" &
	pid=$!
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
	for a in "$@"; do
		got=$(timeout 20 nbdinfo --map="qemu:dirty-bitmap:${a%%=*}" \
			"nbd+unix:///?socket=$sock" | awk '$3 == 1 { printf "%s %s ", $1, $2 }')
		if [ "$got" != "${a#*=}" ]; then
			kill "$pid" 2>/dev/null
			fail "[$ctx] ${a%%=*}: QEMU reads dirty '$got', expected '${a#*=}'"
		fi
	done
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	true
}

# The "bitmaps" part of qemu-img info / img info (human).
bitmaps_of() {
	"$@" | sed -n '/^    bitmaps:/,/^    [a-z]/p'
}

same_info() {
	local f=$1
	diff <(bitmaps_of qemu-img info "$f") <(bitmaps_of "$IMG" info "$f") >"$T/.d" ||
		{ cat "$T/.d" >&2; fail "[$ctx] bitmaps differ in info (qemu <, img >)"; }
	diff <(qemu-img info --output=json "$f" | grep -v actual-size) \
		<("$IMG" info --output=json "$f" | grep -v actual-size) >"$T/.d" ||
		{ cat "$T/.d" >&2; fail "[$ctx] info --output=json differs (qemu <, img >)"; }
}
