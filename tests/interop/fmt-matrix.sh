# SPDX-License-Identifier: MIT
# Sourced by the per-format round-trip tests (tests/interop/test-fmt-*.sh).
# On top of interop-lib.sh it provides:
#   FM_ALL                    the targets every variant under test converts
#                             to: each writable format once (VMDK twice:
#                             plain and compressed grains take different
#                             write paths)
#   fm_contents               make $T/c-{sparse,random,zero,mixed}.raw (same
#                             size; mixed: holes, random data, zero data)
#   fm_same OUT REF           raw OUT equals raw REF (a zero tail past REF's
#                             size is allowed: some formats round the size up)
#   fm_direct CONTENT V...    for each variant V of the format under test:
#                             img and qemu-img each make it from the content;
#                             img's reads identically through qemu-img and
#                             passes both checks, and both read back through
#                             img byte-identical
#   fm_matrix V...            on the mixed content: V made by img converts by
#                             img to every variant in FM_ALL and back to raw
#                             (the other direction is the other format's
#                             test; qcow2 -> V here), qemu-img compare
#                             cross-checking each image made
. "$(dirname "${BASH_SOURCE[0]}")/interop-lib.sh"

FM_SIZE=$((5 * 1048576 + 196608))
FM_ALL=(
	"raw:"
	"qcow2:"
	"vpc:subformat=dynamic,force_size=on"
	"vdi:static=off"
	"vmdk:subformat=monolithicSparse"
	"vmdk:subformat=streamOptimized"
	"vhdx:subformat=dynamic"
)

fm_contents() {
	local s=$T/c-sparse.raw r=$T/c-random.raw z=$T/c-zero.raw off
	truncate -s $FM_SIZE "$s"
	for off in 0 4096 1048064 2097152 3145216 $((FM_SIZE - 4096)); do
		head -c 3000 /dev/urandom | dd of="$s" bs=1 seek=$off conv=notrunc status=none
	done
	head -c $FM_SIZE /dev/urandom >"$r"
	head -c $FM_SIZE /dev/zero >"$z"
	for off in 1 1048575 2097152 5000000 $((FM_SIZE - 1)); do
		printf '\x7f' | dd of="$z" bs=1 seek=$off conv=notrunc status=none
	done
	# mixed: MiB 0 random, 1 zero data, 2 hole with sparse bits, 3 random,
	# 4 zero data, then the sparse tail.
	cp "$s" "$T/c-mixed.raw"
	dd if="$r" of="$T/c-mixed.raw" bs=64k count=16 conv=notrunc status=none
	dd if="$z" of="$T/c-mixed.raw" bs=64k count=16 skip=16 seek=16 conv=notrunc status=none
	dd if="$r" of="$T/c-mixed.raw" bs=64k count=16 skip=48 seek=48 conv=notrunc status=none
	dd if="$z" of="$T/c-mixed.raw" bs=64k count=16 skip=64 seek=64 conv=notrunc status=none
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

# The cross-format matrix on the mixed content.
fm_matrix() {
	local v w fmt wfmt ref=$T/c-mixed.raw
	local vo wo vopts wopts
	for v in "$@"; do
		fmt=${v%%:*}
		vopts=${v#*:}
		vo=()
		[ -n "$vopts" ] && vo=(-o "$vopts")
		ctx="mixed $v made by img"
		rm -f "$T/v.$fmt"
		fm_make img "$v" "$ref" "$T/v.$fmt"
		for w in "${FM_ALL[@]}"; do
			wfmt=${w%%:*}
			wopts=${w#*:}
			wo=()
			[ -n "$wopts" ] && wo=(-o "$wopts")
			ctx="mixed $v -> $w"
			rm -f "$T/t.$wfmt"
			must "$IMG" convert -f "$fmt" -O "$wfmt" "${wo[@]}" "$T/v.$fmt" "$T/t.$wfmt"
			if [ "$wfmt" != raw ]; then
				fm_qcompare "$wfmt" "$T/t.$wfmt" "$ref"
				fm_back "$wfmt" "$T/t.$wfmt" "$T/back.raw"
				fm_same "$T/back.raw" "$ref"
			else
				fm_same "$T/t.raw" "$ref"
			fi
			# The other direction is the test of w's format, but for
			# raw (fm_direct) and qcow2, which have none here.
			[ "$wfmt" = qcow2 ] || continue
			ctx="mixed $w -> $v"
			rm -f "$T/u.$fmt"
			must "$IMG" convert -f qcow2 -O "$fmt" "${vo[@]}" "$T/t.qcow2" "$T/u.$fmt"
			fm_qcompare "$fmt" "$T/u.$fmt" "$ref"
			fm_back "$fmt" "$T/u.$fmt" "$T/back.raw"
			fm_same "$T/back.raw" "$ref"
		done
	done
}
