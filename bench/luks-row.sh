# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2034
# Sourced by bench/run.sh: the LUKS row. luks_row: convert raw -> qcow2 with
# encrypt.format=luks (aes-256-xts-plain64, QEMU's default cipher) by img and
# qemu-img, alternating, both with encrypt.iter-time=10 so that the row times
# the data path, not the key derivation; each result is checked with qemu-img
# compare. The issue's yardstick is `openssl speed -evp aes-256-xts` on one
# core with 16 KiB blocks (no per-sector IV reset), measured in the same run
# right after the converts: the row prints each tool's throughput (guest
# data bytes encrypted / median wall time of the whole convert) and its ratio
# to that reference; the issue asks for img >= 0.9. The 512-byte-block figure
# (an IV reset per sector, as LUKS does) is listed for scale.

# luks_mbps BYTES "SECONDS OF EACH RUN": "MEDIAN (MIN-MAX)" in MB/s.
luks_mbps() {
	local m lo hi
	read -r m lo hi < <(median_spread %.6f "$2")
	awk -v d="$1" -v m="$m" -v lo="$lo" -v hi="$hi" \
		'BEGIN { printf "%.0f (%.0f-%.0f)\n", d / m / 1e6, d / hi / 1e6, d / lo / 1e6 }'
}

luks_row() {
	local r v t0 t1 a="" q="" pw="$W/luks.pw" data sec
	printf 'bench passphrase' >"$pw"
	sec="secret,id=sec0,file=$pw"
	for r in $(seq "$RUNS"); do
		for v in img qemu; do
			[ $((r % 2)) = 0 ] && v=$([ $v = img ] && echo qemu || echo img)
			rm -f out.qcow2
			sync
			t0=$(now)
			if [ $v = img ]; then
				"$IMG" convert --object "$sec" -O qcow2 \
					-o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
					sample.raw out.qcow2
			else
				# qemu-img 7.2's PBKDF2 calibration fails now and then.
				for _ in 1 2 3 4 5; do
					qemu-img convert --object "$sec" -O qcow2 \
						-o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
						sample.raw out.qcow2 2>/dev/null && break
					t0=$(now)
				done
			fi || die "$v LUKS convert failed"
			t1=$(now)
			if ! qemu-img compare -q --object "$sec" --image-opts \
				"driver=raw,file.filename=sample.raw" \
				"driver=qcow2,file.filename=out.qcow2,encrypt.key-secret=sec0"; then
				echo "bench: LUKS convert: $v's result differs" >&2
				failed=1
			fi
			if [ $v = img ]; then a+=" $(elapsed "$t0" "$t1")"; else q+=" $(elapsed "$t0" "$t1")"; fi
		done
	done
	rm -f out.qcow2
	add_row "convert raw -> qcow2 luks (iter-time=10)" "$a" "$q"
	data=$(qemu-img map --output=json -f raw sample.raw |
		awk -F'[:,]' '/"data": true/ { s += $4 } END { print s }')
	local ref ref512 ib qb
	ref=$(openssl speed -evp aes-256-xts -bytes 16384 -seconds 2 2>/dev/null |
		awk '/^AES-256-XTS/ { printf "%.0f", $2 / 1000 }')
	ref512=$(openssl speed -evp aes-256-xts -bytes 512 -seconds 1 2>/dev/null |
		awk '/^AES-256-XTS/ { printf "%.0f", $2 / 1000 }')
	ib=$(luks_mbps "$data" "$a")
	qb=$(luks_mbps "$data" "$q")
	echo "luks: $data data bytes encrypted; openssl speed -evp aes-256-xts, one core: ${ref} MB/s on 16 KiB blocks (${ref512} MB/s on 512-byte blocks)"
	echo "luks: MB/s median (spread) of $RUNS runs: img ${ib} = $(ratio "${ib%% *}" "$ref") x openssl; qemu-img ${qb} = $(ratio "${qb%% *}" "$ref") x openssl (target for img: 0.90)"
}
