# SPDX-License-Identifier: MIT
# Sourced by the per-format round-trip tests (tests/interop/test-fmt-*.sh).
# On top of interop-lib.sh it provides:
#   FM_ALL                    every writable format variant: the targets
#                             of the matrix (and its sources, with raw)
#   fm_contents               make $T/c-{sparse,random,zero,mixed}.raw (same
#                             size; mixed: holes, random data, zero data,
#                             runs across 1, 2 and 8 MiB block boundaries)
#   fm_same OUT REF           raw OUT equals raw REF (a zero tail past REF's
#                             size is allowed: some formats round the size up)
#   fm_direct CONTENT V...    for each variant V of the format under test:
#                             img and qemu-img each make it from the content;
#                             img's reads identically through qemu-img and
#                             passes both checks, and both read back through
#                             img byte-identical
#   fm_matrix V...            on the mixed content: V made by img converts by
#                             img to every variant in FM_ALL (one case per
#                             pair), qemu-img compare checks each target
#                             against the content, and img converts it back
#                             to raw byte-identical
#   fm_matrix_test V...       a whole matrix test script: the content, the
#                             matrix for sources V..., the verdict
. "$(dirname "${BASH_SOURCE[0]}")/interop-lib.sh"

FM_SIZE=$((8 * 1048576 + 196608))
FM_ALL=(
	"raw:"
	"qcow2:"
	"vmdk:subformat=monolithicSparse"
	"vmdk:subformat=streamOptimized"
	"vmdk:subformat=monolithicFlat"
	"vmdk:subformat=twoGbMaxExtentSparse"
	"vmdk:subformat=twoGbMaxExtentFlat"
	"vpc:subformat=fixed,force_size=on"
	"vpc:subformat=dynamic,force_size=on"
	"vhdx:subformat=fixed"
	"vhdx:subformat=dynamic"
	"vdi:static=on"
	"vdi:static=off"
)

fm_contents() {
	local s=$T/c-sparse.raw r=$T/c-random.raw z=$T/c-zero.raw off
	truncate -s $FM_SIZE "$s"
	# Runs of data across the 1 MiB (VDI), 2 MiB (VHD) and 8 MiB (VHDX)
	# block boundaries and in the last sectors.
	for off in 0 4096 1048064 2097152 3145216 6291200 8388096 $((FM_SIZE - 4096)); do
		head -c 3000 /dev/urandom | dd of="$s" bs=1 seek=$off conv=notrunc status=none
	done
	head -c $FM_SIZE /dev/urandom >"$r"
	head -c $FM_SIZE /dev/zero >"$z"
	for off in 1 1048575 2097152 5000000 8388608 $((FM_SIZE - 1)); do
		printf '\x7f' | dd of="$z" bs=1 seek=$off conv=notrunc status=none
	done
	# mixed: MiB 0 random, 1 zero data, 2 hole with sparse bits, 3 random,
	# 4 zero data, 5-6 sparse, 7 random up to the 8 MiB boundary, then
	# the sparse tail.
	cp "$s" "$T/c-mixed.raw"
	dd if="$r" of="$T/c-mixed.raw" bs=64k count=16 conv=notrunc status=none
	dd if="$z" of="$T/c-mixed.raw" bs=64k count=16 skip=16 seek=16 conv=notrunc status=none
	dd if="$r" of="$T/c-mixed.raw" bs=64k count=16 skip=48 seek=48 conv=notrunc status=none
	dd if="$z" of="$T/c-mixed.raw" bs=64k count=16 skip=64 seek=64 conv=notrunc status=none
	dd if="$r" of="$T/c-mixed.raw" bs=64k count=16 skip=112 seek=112 conv=notrunc status=none
}

fm_same() {
	local out=$1 ref=$2 n so
	n=$(stat -c %s "$ref")
	so=$(stat -c %s "$out")
	[ "$so" -ge "$n" ] || fail "[$ctx] $out has $so bytes, want $n"
	cmp -n "$n" "$out" "$ref" >/dev/null || fail "[$ctx] $out differs from $ref"
	if [ "$so" -gt "$n" ]; then
		cmp -n $((so - n)) -i "$n:0" "$out" /dev/zero >/dev/null ||
			fail "[$ctx] $out has non-zero bytes past $n"
	fi
}

# Make FILE of variant V from raw SRC with TOOL (img or qemu-img).
fm_make() {
	local tool=$1 v=$2 src=$3 dst=$4 fmt=${2%%:*} opts=${2#*:}
	local o=()
	[ -n "$opts" ] && o=(-o "$opts")
	if [ "$tool" = img ]; then
		must "$IMG" convert -f raw -O "$fmt" "${o[@]}" "$src" "$dst"
	else
		must qemu-img convert -f raw -O "$fmt" "${o[@]}" "$src" "$dst"
	fi
}

fm_back() {
	local fmt=$1 src=$2 dst=$3
	rm -f "$dst"
	must "$IMG" convert -f "$fmt" -O raw "$src" "$dst"
}

fm_qcompare() {
	local fmt=$1 file=$2 ref=$3
	must qemu-img compare -q -f raw -F "$fmt" "$ref" "$file"
}

# Direct round trips of the variants under test on one content.
fm_direct() {
	local content=$1 v fmt i=0 ref=$T/c-$1.raw
	shift
	for v in "$@"; do
		i=$((i + 1))
		fmt=${v%%:*}
		ctx="$content $v img-made"
		fm_make img "$v" "$ref" "$T/i$i.$fmt"
		fm_qcompare "$fmt" "$T/i$i.$fmt" "$ref"
		fm_back "$fmt" "$T/i$i.$fmt" "$T/back.raw"
		fm_same "$T/back.raw" "$ref"
		case $fmt in qcow2 | vdi | vmdk | vhdx) qcheck "$T/i$i.$fmt" -f "$fmt" ;; esac
		must "$IMG" check -f "$fmt" "$T/i$i.$fmt"
		ctx="$content $v qemu-made"
		fm_make qemu-img "$v" "$ref" "$T/q$i.$fmt"
		fm_back "$fmt" "$T/q$i.$fmt" "$T/back.raw"
		fm_same "$T/back.raw" "$ref"
	done
}

# One pair of the matrix on the mixed content: source variant V (made by
# img, or the raw content itself) converted by img to target variant W,
# qemu-img compare of the target against the content, and back to raw by
# img, byte-identical.
fm_pair() {
	local v=$1 w=$2 ref=$T/c-mixed.raw fmt wfmt wopts wo=() src
	fmt=${v%%:*}
	wfmt=${w%%:*}
	wopts=${w#*:}
	[ -n "$wopts" ] && wo=(-o "$wopts")
	ctx="mixed $v -> $w"
	src=$T/src/$(fm_name "$v").$fmt
	rm -rf "$T/p"
	mkdir "$T/p"
	must "$IMG" convert -f "$fmt" -O "$wfmt" "${wo[@]}" "$src" "$T/p/t.$wfmt"
	if [ "$wfmt" = raw ]; then
		fm_same "$T/p/t.raw" "$ref"
		return
	fi
	fm_qcompare "$wfmt" "$T/p/t.$wfmt" "$ref"
	fm_back "$wfmt" "$T/p/t.$wfmt" "$T/p/back.raw"
	fm_same "$T/p/back.raw" "$ref"
}

# A file name for variant V.
fm_name() {
	local n=${1//[:=,]/-}
	echo "${n%-}"
}

# The cross-format matrix: each source variant V... (made by img from the
# mixed content) to every variant in FM_ALL and back, each pair a case.
fm_matrix() {
	local v w fmt
	mkdir -p "$T/src"
	for v in "$@"; do
		fmt=${v%%:*}
		ctx="mixed $v made by img"
		if [ "$fmt" = raw ]; then
			cp "$T/c-mixed.raw" "$T/src/raw.raw"
		else
			tcase fm_make img "$v" "$T/c-mixed.raw" "$T/src/$(fm_name "$v").$fmt"
		fi
		for w in "${FM_ALL[@]}"; do
			tcase fm_pair "$v" "$w"
		done
	done
}

fm_matrix_test() {
	local f
	for f in vdi vmdk vpc vhdx; do
		need_format $f
	done
	fm_contents
	fm_matrix "$@"
	finish
}
