#!/bin/bash
# SPDX-License-Identifier: MIT
# On a terminal, img asks for the passphrase of an encrypted image that was
# given none, without echo (script(1) provides the pseudo-terminal): the
# right one opens the image, a wrong one fails with exit 1, and the typed
# passphrase never shows in the output.
. "$(dirname "$0")/functions.sh"
requires script timeout

PASS="Typed-Secret-$$"
printf '%s' "$PASS" >"$T/pw"
f="$T/enc.qcow2"
expect_exit 0 "$IMG" create --key-file "$T/pw" -f qcow2 \
	-o encrypt.format=luks,encrypt.iter-time=10 "$f" 1M
expect_exit 0 "$IMG" io --key-file "$T/pw" -c "write -P 0x33 0 4096" "$f"

# type LINE CMD: run CMD on a pseudo-terminal, typing LINE once it asks.
type_into() {
	(sleep 1; printf '%s\n' "$1") |
		timeout 30 script -qec "$2" /dev/null >"$T/tty.out" 2>&1
}
type_into "$PASS" "'$IMG' io -c 'read -P 0x33 0 4096' '$f'"
rc=$?
[ $rc = 0 ] || fail "prompted open failed ($rc): $(cat "$T/tty.out")"
grep -q "Password for" "$T/tty.out" || fail "no prompt: $(cat "$T/tty.out")"
grep -q "read 4096/4096" "$T/tty.out" || fail "no read: $(cat "$T/tty.out")"
grep -q "Pattern verification failed" "$T/tty.out" && fail "pattern"
grep -qF "$PASS" "$T/tty.out" && fail "the passphrase was echoed"

type_into "wrong-$PASS" "'$IMG' convert '$f' -O raw '$T/x.raw'"
rc=$?
[ $rc = 1 ] || fail "wrong typed passphrase: exit $rc"
grep -q "Invalid password" "$T/tty.out" || fail "message: $(cat "$T/tty.out")"
grep -qF "$PASS" "$T/tty.out" && fail "the passphrase was echoed"
echo ok
