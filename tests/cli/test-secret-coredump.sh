#!/bin/bash
# SPDX-License-Identifier: MIT
# A real core dump of a running `img io --key-file` on a LUKS qcow2 (killed
# with SIGSEGV after decrypting 4 MiB on every core) holds neither half of
# the XTS volume key, which cryptsetup reads from the image's own LUKS header.
# Controls, so that the test fails if cores or the search are broken: the
# same command on a plain qcow2 (no key loaded) leaves a core in which the
# search finds a marker the process holds (its image name), and while the
# key is loaded the process's coredump_filter is 0. The same for img-nbd
# serving the LUKS image (--object secret + --image-opts, as qemu-nbd) and
# serving over TLS with a PSK (a qemu-io client reads through each): its core
# holds neither the volume key nor the PSK; a plain img-nbd's core shows the
# marker.
. "$(dirname "$0")/functions.sh"
requires python3 cryptsetup

sig=SEGV
if grep -qa __asan_init "$IMG"; then
	# ASan turns core dumps off and handles SIGSEGV itself.
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}disable_coredump=0"
	sig=ABRT
fi
pattern=$(cat /proc/sys/kernel/core_pattern)
case "$pattern" in
'|'* | */* | '@'*) skip "core_pattern '$pattern' does not write a core file the test can read" ;;
esac
ulimit -c unlimited 2>/dev/null || skip "cannot raise RLIMIT_CORE (hard limit $(ulimit -Hc))"
uses_pid=$(cat /proc/sys/kernel/core_uses_pid 2>/dev/null || echo 0)
mkdir "$T/run"
[ -w "$T/run" ] || skip "no writable directory for the core"

# The core file a process pid named comm leaves in its cwd $T/run.
core_of() {
	local name=${pattern//%%/$'\001'} has_pid=0
	[[ $name == *%p* ]] && has_pid=1
	name=${name//%p/$1}
	name=${name//%e/${2:0:15}}
	[[ $name == *%* ]] && return 1
	name=${name//$'\001'/%}
	[ "$uses_pid" = 1 ] && [ $has_pid = 0 ] && name=$name.$1
	echo "$name"
}

# Which of the NAME=HEX strings does file hold: their names.
found_in() {
	python3 - "$@" <<'EOF'
import mmap, sys
with open(sys.argv[1], "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
    for arg in sys.argv[2:]:
        name, hexa = arg.split("=")
        if m.find(bytes.fromhex(hexa)) >= 0:
            print(name)
EOF
}
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }

# Run img io with the given options on image, from a fifo, in $T/run: read
# 4 MiB (pattern 0x61 checked), then SIGSEGV (SIGABRT under ASan). Sets $core (may not exist).
crash_io() {
	local image=$1 pid i
	shift
	rm -f "$T/cmds" "$T/io.out"
	mkfifo "$T/cmds"
	(cd "$T/run" && exec "$IMG" io "$@" "$image" <"$T/cmds" >"$T/io.out" 2>&1) &
	pid=$!
	exec 4>"$T/cmds"
	echo "read -P 0x61 0 4M" >&4
	for i in $(seq 300); do
		grep -q "bytes at offset\|failed\|rror" "$T/io.out" && break
		sleep 0.1
	done
	grep -q "read 4194304/4194304 bytes" "$T/io.out" ||
		fail "img io did not read: $(cat "$T/io.out")"
	filter=$(cat "/proc/$pid/coredump_filter")
	kill -"$sig" "$pid"
	{ wait "$pid"; } 2>/dev/null
	exec 4>&-
	core=$T/run/$(core_of "$pid" img) || skip "core_pattern '$pattern' has specifiers the test does not expand"
}

PASS="Coredump-Test-4417-$$"
printf '%s' "$PASS" >"$T/pw"
enc=$T/enc.qcow2
expect_exit 0 "$IMG" create --key-file "$T/pw" -f qcow2 \
	-o encrypt.format=luks,encrypt.iter-time=10 "$enc" 8M
expect_exit 0 "$IMG" io --key-file "$T/pw" -c "write -P 0x61 0 4M" "$enc"

# The volume key, from the LUKS header the qcow2 crypto extension locates.
python3 - "$enc" "$T/hdr.luks" <<'EOF' || fail "no LUKS header in $enc"
import struct, sys
d = open(sys.argv[1], "rb").read(1 << 20)
off = struct.unpack(">I", d[100:104])[0] if struct.unpack(">I", d[4:8])[0] >= 3 else 72
while off + 8 <= len(d):
    t, l = struct.unpack(">II", d[off:off + 8])
    if t == 0:
        break
    if t == 0x0537BE77:
        start, length = struct.unpack(">QQ", d[off + 8:off + 24])
        open(sys.argv[2], "wb").write(open(sys.argv[1], "rb").read(start + length)[start:])
        sys.exit(0)
    off += 8 + (l + 7) // 8 * 8
sys.exit(1)
EOF
cryptsetup luksDump --dump-volume-key --batch-mode --key-file "$T/pw" \
	"$T/hdr.luks" >"$T/dump" 2>&1 || fail "cryptsetup: $(cat "$T/dump")"
key=$(awk '/^(MK dump|Volume key):/ { on = 1; sub(/^[^:]*:/, "") }
	on && /^[A-Za-z]/ && !/^(MK dump|Volume key):/ { on = 0 }
	on { printf "%s", $0 }' "$T/dump" | tr -d ' \t')
[ ${#key} = 128 ] || fail "expected a 64-byte XTS key from cryptsetup, got '$key'"

# Control: a plain image, no key loaded: a core that shows process memory.
marker="plain-marker-$$-$RANDOM"
plain=$T/$marker.qcow2
expect_exit 0 "$IMG" create -f qcow2 "$plain" 8M
expect_exit 0 "$IMG" io -c "write -P 0x61 0 4M" "$plain"
crash_io "$plain"
[ -f "$core" ] || fail "no core from the control run ($core): cores are broken here"
[ "$(found_in "$core" "marker=$(hex "$marker")")" = marker ] ||
	fail "the control core does not show the marker: the search cannot see memory"
[ $((16#$filter)) != 0 ] || fail "coredump_filter is 0 with no key loaded"
rm -f "$core"

crash_io "$enc" --key-file "$T/pw"
if [ -f "$core" ]; then
	found=$(found_in "$core" "first-half=${key:0:64}" "second-half=${key:64:64}" \
		"quarter1=${key:0:32}" "quarter2=${key:32:32}" \
		"quarter3=${key:64:32}" "quarter4=${key:96:32}" \
		"passphrase=$(hex "$PASS")")
	[ -z "$found" ] || fail "key material in the core: ${found//$'\n'/ }"
fi
[ $((16#$filter)) = 0 ] || fail "coredump_filter is $filter while the key is loaded"

# Run img-nbd with the given options (the last names the image) on
# $T/run/sock, read through it with qemu-io (TLS PSK if $psk_dir is set),
# then SIGSEGV.
crash_nbd() {
	local pid i tls=""
	rm -f "$T/run/sock"
	(cd "$T/run" && exec "$IMG_NBD" -t -x e -k "$T/run/sock" "$@" \
		>"$T/nbd.out" 2>&1) &
	pid=$!
	for i in $(seq 300); do
		[ -S "$T/run/sock" ] && break
		sleep 0.1
	done
	[ -n "${psk_dir:-}" ] && tls=",tls-creds=c0"
	timeout 30 qemu-io ${psk_dir:+--object "tls-creds-psk,id=c0,dir=$psk_dir,endpoint=client"} \
		--image-opts "driver=nbd,path=$T/run/sock,export=e$tls" \
		-c "read -P 0x61 0 4M" >"$T/qio.out" 2>&1 ||
		fail "qemu-io through img-nbd $*: $(cat "$T/qio.out" "$T/nbd.out")"
	filter=$(cat "/proc/$pid/coredump_filter")
	kill -"$sig" "$pid"
	{ wait "$pid"; } 2>/dev/null
	core=$T/run/$(core_of "$pid" img-nbd)
}

if command -v qemu-io >/dev/null; then
	psk_dir=
	crash_nbd "$plain"
	[ -f "$core" ] || fail "no core from the control img-nbd ($core)"
	[ "$(found_in "$core" "marker=$(hex "$marker")")" = marker ] ||
		fail "the control img-nbd core does not show the marker"
	rm -f "$core"

	psk=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
	psk_dir=$T/psk
	mkdir "$psk_dir"
	echo "qemu:$psk" >"$psk_dir/keys.psk"
	crash_nbd --tls-psk-file "$psk_dir/keys.psk" "$plain"
	if [ -f "$core" ]; then
		found=$(found_in "$core" "psk=$psk" "psk-half=${psk:0:32}" \
			"psk-hex=$(hex "$psk")")
		[ -z "$found" ] || fail "the TLS PSK is in img-nbd's core: ${found//$'\n'/ }"
	fi
	[ $((16#$filter)) = 0 ] || fail "img-nbd's coredump_filter is $filter with a PSK loaded"

	psk_dir=
	crash_nbd --object "secret,id=s0,file=$T/pw" --image-opts \
		"driver=qcow2,file.filename=$enc,encrypt.key-secret=s0"
	if [ -f "$core" ]; then
		found=$(found_in "$core" "first-half=${key:0:64}" \
			"second-half=${key:64:64}" "quarter1=${key:0:32}" \
			"quarter3=${key:64:32}" "passphrase=$(hex "$PASS")")
		[ -z "$found" ] || fail "key material in img-nbd's core: ${found//$'\n'/ }"
	fi
	[ $((16#$filter)) = 0 ] || fail "img-nbd's coredump_filter is $filter serving a LUKS image"
fi
echo ok
