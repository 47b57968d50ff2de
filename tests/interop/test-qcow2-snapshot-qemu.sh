#!/bin/bash
# SPDX-License-Identifier: MIT
# Internal snapshots qemu-img 7.2 made, used by img: img lists them as qemu-img
# does, its writes copy the shared clusters, it applies and deletes them and
# `qemu-img check` stays clean. Also an image whose snapshot carries VM state
# (written by qemu-io `write -b` into the VM state area, snapshotted by
# qemu-img, its vm_state_size field then set by hand since qemu-img cannot
# save a VM): img keeps the VM state intact while other snapshots come and
# go, and applying the snapshot brings it back (qemu-io `read -b`). The cases
# live in snapshot-lib.sh.
. "$(dirname "$0")/snapshot-lib.sh"

tcase qemu_made "cluster_size=65536" 65536
tcase qemu_made "cluster_size=16384,lazy_refcounts=on,extended_l2=on" 16384
tcase vm_state
finish
