#!/bin/bash
# SPDX-License-Identifier: MIT
# Discards through img-nbd give space back to the host only with
# --discard=unmap, as with qemu-nbd: a qcow2 with 32 MiB of data, discarded
# over NBD by qemu-io, shrinks on disk (the freed clusters are punched) and
# reads back zeroes there with unmap; with ignore (the default) the discard
# is a no-op: blocks and data stay. qemu-img check is clean in every case.
# qemu-nbd is run on a copy in the same way and must agree.
. "$(dirname "$0")/nbd-lib.sh"
requires qemu-nbd

blocks() { stat -c %b "$1"; }

run() { # SERVER MODE FILE
	local server=$1 mode=$2 f=$3 sock=$T/$1-$2.sock
	if [ "$server" = img ]; then
		nbd_start "$server-$mode" -k "$sock" --discard="$mode" -f qcow2 "$f"
	else
		qemu-nbd --fork --pid-file "$T/$server-$mode.pid" -k "$sock" \
			--discard="$mode" -f qcow2 "$f" || fail "qemu-nbd did not start"
		at_exit "kill \$(cat '$T/$server-$mode.pid' 2>/dev/null) 2>/dev/null"
	fi
	must qemu-io -f raw -c 'discard 4M 24M' -c 'flush' \
		"nbd+unix:///?socket=$sock"
	if [ "$server" = img ]; then
		nbd_stop "$server-$mode"
	else
		kill "$(cat "$T/$server-$mode.pid")"
		for _ in $(seq 100); do
			kill -0 "$(cat "$T/$server-$mode.pid" 2>/dev/null)" 2>/dev/null || break
			sleep 0.1
		done
	fi
}

qemu-img create -q -f qcow2 "$T/base.qcow2" 64M
must qemu-io -f qcow2 -c 'write -P 0x5a 0 32M' "$T/base.qcow2"
before=$(blocks "$T/base.qcow2")

for server in img qemu; do
	for mode in unmap ignore; do
		ctx="$server-nbd --discard=$mode"
		f=$T/$server-$mode.qcow2
		cp "$T/base.qcow2" "$f"
		run "$server" "$mode" "$f"
		must qemu-img check "$f"
		p=0; [ "$mode" = ignore ] && p=0x5a
		must qemu-io -f qcow2 -c 'read -P 0x5a 0 4M' -c "read -P $p 4M 24M" \
			-c 'read -P 0x5a 28M 4M' "$f"
		after=$(blocks "$f")
		# 24 MiB is 49152 blocks of 512 bytes.
		if [ "$mode" = unmap ]; then
			[ $((before - after)) -ge 40000 ] ||
				fail "[$ctx] $before -> $after blocks: space not given back"
		else
			[ $((before - after)) -lt 8192 ] ||
				fail "[$ctx] $before -> $after blocks: space given back without unmap"
		fi
		echo "$ctx: $before -> $after blocks"
	done
done
echo ok
