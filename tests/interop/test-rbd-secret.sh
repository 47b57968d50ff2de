#!/bin/bash
# SPDX-License-Identifier: MIT
# The cephx key from a secret instead of the conf's keyring: with a conf that
# names no keyring, rbd:POOL/IMAGE:password-secret=ID and --object
# secret,id=ID,file=PATH (the key of client.test in a file) write and read
# an RBD image; without the secret the cluster refuses within the timeout;
# an unknown secret id and a key in the name are refused with clear errors;
# the key given as a secret never shows in the output.
. "$(dirname "$0")/rbd-lib.sh"
rbd_cluster

ceph-authtool -p -n client.test "$CL/keyring" >"$T/key" || fail "no client.test key"
grep -v '^keyring' "$CL/ceph.conf" >"$T/nokr.conf"
key=$(cat "$T/key")
n="rbd:$POOL/sec:conf=$T/nokr.conf:id=test:client_mount_timeout=5"
head -c 4M /dev/urandom >"$T/a.raw"

ctx="key from a secret"
must "$IMG" convert --object "secret,id=k,file=$T/key" -O raw "$T/a.raw" "$n:password-secret=k"
must "$IMG" convert --object "secret,id=k,file=$T/key" -O raw "$n:password-secret=k" "$T/b.raw"
cmp "$T/a.raw" "$T/b.raw" || fail "[$ctx] contents differ"
qemu-img compare -f raw -F raw "$T/a.raw" "rbd:$POOL/sec" >/dev/null ||
	fail "[$ctx] qemu-img (admin keyring) reads other contents"
grep -qF "$key" "$T/.must" && fail "[$ctx] the key is in the output"

ctx="no key"
expect_exit 1 timeout 60 "$IMG" info "$n"
grep -q "cannot connect" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"

ctx="unknown secret"
expect_exit 1 "$IMG" info "$n:password-secret=nope"
grep -q "no secret 'nope'" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"

ctx="key in the name"
expect_exit 1 "$IMG" info "$n:key=$key"
grep -q "refused" "$T/.err" || fail "[$ctx] message: $(cat "$T/.err")"
echo ok
