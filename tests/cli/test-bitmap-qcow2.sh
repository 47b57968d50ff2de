#!/bin/bash
# SPDX-License-Identifier: MIT
# img bitmap on qcow2 without the peers: qemu-img's syntax (actions run in
# command-line order, -g only with --add, -b only with --merge, -F only with
# -b), its error messages and exit code 1, default granularity (cluster size
# clamped to 4k..64k), the list in img info (human and JSON), refusal on raw
# and v2 images, resize with bitmaps, and img check staying clean.
. "$(dirname "$0")/functions.sh"
"$IMG" --help | grep -q '^Supported formats:.* qcow2' || skip "qcow2 not built"
cd "$T" || exit 1

"$IMG" create -q -f qcow2 a.qcow2 64M || fail "create"
expect_exit 0 "$IMG" bitmap --add a.qcow2 b0
expect_exit 0 "$IMG" bitmap --add -g 128k a.qcow2 b1 --disable
expect_exit 0 "$IMG" bitmap --add --remove --add a.qcow2 tmp
expect_exit 0 "$IMG" bitmap --remove a.qcow2 tmp
"$IMG" info a.qcow2 >info.txt || fail "info"
cat >want.txt <<'EOF'
    bitmaps:
        [0]:
            flags:
                [0]: auto
            name: b0
            granularity: 65536
        [1]:
            flags:
            name: b1
            granularity: 131072
EOF
sed -n '/^    bitmaps:/,/^    refcount/p' info.txt | sed '$d' >got.txt
diff want.txt got.txt || fail "img info bitmaps"
"$IMG" info --output=json a.qcow2 >info.json || fail "info json"
tr -d ' \n' <info.json | grep -q '"bitmaps":\[{"flags":\["auto"\],"name":"b0","granularity":65536},{"flags":\[\],"name":"b1","granularity":131072}\]' ||
	fail "img info --output=json bitmaps: $(cat info.json)"

# Errors: exit 1 with qemu-img's wording.
expect_exit 1 "$IMG" bitmap --add a.qcow2 b0
grep -q "Operation add on bitmap b0 failed: .*already exists" .err || fail "exists: $(cat .err)"
expect_exit 1 "$IMG" bitmap --remove a.qcow2 nope
grep -q "Operation remove on bitmap nope failed: .*'nope' not found" .err || fail "not found: $(cat .err)"
expect_exit 1 "$IMG" bitmap --merge nope a.qcow2 b0
expect_exit 1 "$IMG" bitmap a.qcow2 b0
grep -q "Need at least one of --add" .err || fail "no action: $(cat .err)"
expect_exit 1 "$IMG" bitmap -g 64k --remove a.qcow2 b0
grep -q "granularity only supported with --add" .err || fail "-g: $(cat .err)"
expect_exit 1 "$IMG" bitmap -F qcow2 --merge b0 a.qcow2 b1
grep -q -- "-F only supported with -b" .err || fail "-F: $(cat .err)"
expect_exit 1 "$IMG" bitmap -b a.qcow2 --add a.qcow2 x
grep -q "source file only supported with --merge" .err || fail "-b: $(cat .err)"
expect_exit 1 "$IMG" bitmap --add a.qcow2
grep -q "Expecting filename and bitmap name" .err || fail "argc: $(cat .err)"
expect_exit 1 "$IMG" bitmap --add -g 64x a.qcow2 x
grep -q "Invalid granularity specified" .err || fail "bad -g: $(cat .err)"
expect_exit 1 "$IMG" bitmap --add -g 1000 a.qcow2 x
expect_exit 1 "$IMG" bitmap --add -g 256 a.qcow2 x
expect_exit 1 "$IMG" bitmap --add -g 4G a.qcow2 x
expect_exit 1 "$IMG" bitmap --add a.qcow2 ""
expect_exit 1 "$IMG" bitmap --add a.qcow2 "$(printf 'n%.0s' $(seq 1024))"
expect_exit 1 "$IMG" bitmap --bogus a.qcow2 x
expect_exit 1 "$IMG" bitmap --add nonexist.qcow2 x
# An action list stops at the first failure; earlier actions stay done.
expect_exit 1 "$IMG" bitmap --add --add a.qcow2 c
"$IMG" info a.qcow2 | grep -q 'name: c$' || fail "first --add of the list lost"
expect_exit 0 "$IMG" bitmap --remove a.qcow2 c
expect_exit 0 "$IMG" bitmap --add -g 2G a.qcow2 huge
expect_exit 0 "$IMG" check a.qcow2

# Resizing keeps the bitmaps (resized; checked against QEMU in the interop
# test).
expect_exit 0 "$IMG" resize a.qcow2 128M
expect_exit 0 "$IMG" check a.qcow2
"$IMG" info a.qcow2 | grep -q 'name: b1$' || fail "bitmap lost by resize"
expect_exit 0 "$IMG" resize --shrink a.qcow2 64M
expect_exit 0 "$IMG" check a.qcow2

# Default granularity follows the cluster size, clamped to 4k..64k.
for cs in 512:4096 16k:16384 2M:65536; do
	"$IMG" create -q -f qcow2 -o cluster_size=${cs%%:*} c.qcow2 1G || fail "create $cs"
	expect_exit 0 "$IMG" bitmap --add c.qcow2 d
	"$IMG" info c.qcow2 | grep -q "granularity: ${cs#*:}$" || fail "default granularity for ${cs%%:*}"
done

# Formats and versions without bitmaps.
"$IMG" create -q -f raw r.raw 1M || fail "create raw"
expect_exit 1 "$IMG" bitmap -f raw --add r.raw x
"$IMG" create -q -f qcow2 -o compat=0.10 v2.qcow2 1M || fail "create v2"
expect_exit 1 "$IMG" bitmap --add v2.qcow2 x
grep -q "v2" .err || fail "v2 message: $(cat .err)"

# Writes mark enabled bitmaps; the image stays clean.
expect_exit 0 "$IMG" io -c 'write 1M 4k' a.qcow2
expect_exit 0 "$IMG" check a.qcow2
"$IMG" info a.qcow2 | grep -q in-use && fail "in-use left after a clean close"
exit 0
