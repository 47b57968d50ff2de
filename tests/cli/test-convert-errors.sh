#!/bin/bash
# SPDX-License-Identifier: MIT
# img convert's error cases exit 1 with one "img: ..." line, as qemu-img
# convert does: missing source, unknown formats, target too small with -n,
# bad -S/-m values, option conflicts, snapshots, missing file names.
. "$(dirname "$0")/functions.sh"
cd "$T" || exit 1

truncate -s 1M src.raw
truncate -s 512K small.raw

err() {
	local want=$1
	shift
	expect_exit 1 "$IMG" convert "$@"
	# one line (usage errors add qemu-img's "Try ... --help" hint)
	[ "$(grep -vc '^Try ' "$T/.err")" = 1 ] || { cat "$T/.err"; fail "convert $*: not one line"; }
	grep -q "^img: .*$want" "$T/.err" || { cat "$T/.err"; fail "convert $*: no '$want'"; }
}
err "Could not open 'missing.raw'" missing.raw out.raw
err "foo" -f foo src.raw out.raw
err "foo" -O foo src.raw out.raw
err "smaller than input" -n src.raw small.raw
cmp -s small.raw <(head -c 512K /dev/zero) || fail "-n wrote into a too small target"
err "Could not open 'absent.raw'" -n src.raw absent.raw
err "requires use of -n" --target-is-zero src.raw out.raw
err "Invalid buffer size" -S 100 src.raw out.raw
err "Invalid number of coroutines" -m 17 src.raw out.raw
err "Invalid number of coroutines" -m 0 src.raw out.raw
err "no effect" -n -o cluster_size=4k src.raw small.raw
err "snapshot" -l snap src.raw out.raw
err "Must specify" src.raw
err "unrecognized option" --bogus src.raw out.raw
err "cache" -t bogus src.raw out.raw
err "backing format" -O qcow2 -B src.raw src.raw out.qcow2
[ -e out.raw ] && fail "a failed convert left out.raw"
# a write failing mid-way (file size limit at 2 MiB): exit 1, one line
head -c 8M /dev/urandom >data.raw
truncate -s 8M full.raw
for w in "" -W; do
	(trap '' XFSZ; ulimit -f 2048; exec "$IMG" convert $w -n data.raw full.raw) \
		>/dev/null 2>"$T/.err"
	[ $? = 1 ] || fail "convert $w past the file size limit did not fail"
	grep -q '^img: error while writing at byte [0-9]*: .*' "$T/.err" ||
		{ cat "$T/.err"; fail "write error message"; }
done
expect_exit 0 "$IMG" convert -h
exit 0
