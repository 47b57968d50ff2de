#!/bin/bash
# SPDX-License-Identifier: MIT
# img-nbd --object secret,id=ID,file=PATH with --image-opts
# driver=qcow2,file.filename=PATH,encrypt.key-secret=ID (qemu-nbd's command
# line) serves a LUKS-encrypted qcow2 made and written by qemu: qemu-io and
# nbdinfo read it over NBD, and it converts to the same bytes qemu-img
# decrypts. --object errors name the offending type or key exactly (they were
# read from freed memory before). A wrong passphrase or secret id is refused.
. "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo
M=1048576

printf 'correct horse' >"$T/pw"
printf 'wrong horse' >"$T/bad"
# qemu-img 7.2 fails LUKS creation about one time in four (PBKDF2
# calibration): retry.
for _ in 1 2 3 4 5 6; do
	qemu-img create -q -f qcow2 --object secret,id=s0,file="$T/pw" \
		-o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
		"$T/e.qcow2" 16M 2>"$T/create.err" && break
	rm -f "$T/e.qcow2"
done
[ -f "$T/e.qcow2" ] || fail "qemu-img could not create a LUKS qcow2: $(cat "$T/create.err")"
QOPTS="driver=qcow2,file.filename=$T/e.qcow2,encrypt.key-secret=s0"
must qemu-io --object secret,id=s0,file="$T/pw" --image-opts "$QOPTS" \
	-c "write -P 0xa7 1M 2M" -c "write -P 0x3c 15M 512k"
must qemu-img convert --object secret,id=s0,file="$T/pw" --image-opts \
	"$QOPTS" -O raw "$T/ref.raw"

SOCK=$T/s.sock
U="nbd+unix:///?socket=$SOCK"
nbd_start s -t -r -k "$SOCK" --object secret,id=s0,file="$T/pw" \
	--image-opts "$QOPTS"
ctx="read over nbd"
must qemu-io -r -f raw -c "read -P 0 0 1M" -c "read -P 0xa7 1M 2M" \
	-c "read -P 0x3c 15M 512k" "$U"
must nbdinfo --size "$U"
[ "$(cat "$T/.must")" = $((16 * M)) ] || fail "[$ctx] nbdinfo size: $(cat "$T/.must")"
must qemu-img convert -f raw -O raw "$U" "$T/out.raw"
cmp "$T/ref.raw" "$T/out.raw" || fail "[$ctx] served data differs from qemu-img's decryption"
nbd_stop s

# Errors name what is wrong, exactly.
expect_err() {
	local want=$1
	shift
	expect_exit 1 timeout 20 "$IMG_NBD" -k "$T/x.sock" "$@"
	grep -qxF "img-nbd: $want" "$T/.err" ||
		fail "expected 'img-nbd: $want', got: $(cat "$T/.err")"
}
expect_err "--object: unsupported type 'bogus-type'" \
	--object bogus-type,id=x "$T/e.qcow2"
expect_err "--object: unknown key 'bogus-key'" \
	--object tls-creds-x509,id=t,dir="$T",bogus-key=1 "$T/e.qcow2"
expect_exit 1 timeout 20 "$IMG_NBD" -k "$T/x.sock" --image-opts "$QOPTS,bogus.option=1"
grep -q ": --image-opts: unsupported option 'bogus.option'$" "$T/.err" ||
	fail "unsupported image option: $(cat "$T/.err")"
expect_exit 1 timeout 20 "$IMG_NBD" -k "$T/x.sock" \
	--object secret,id=s0,file="$T/bad" --image-opts "$QOPTS"
grep -q "Invalid password" "$T/.err" || fail "wrong passphrase: $(cat "$T/.err")"
expect_exit 1 timeout 20 "$IMG_NBD" -k "$T/x.sock" \
	--object secret,id=s1,file="$T/pw" --image-opts "$QOPTS"
grep -q "No secret with id 's0'" "$T/.err" || fail "unknown secret id: $(cat "$T/.err")"
echo ok
