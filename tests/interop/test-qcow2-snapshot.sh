#!/bin/bash
# SPDX-License-Identifier: MIT
# Internal snapshots img makes, checked with qemu-img 7.2: snapshots img
# creates, applies and deletes pass `qemu-img check`, list identically in
# `qemu-img snapshot -l` and `qemu-img info` (text and JSON), and qemu-img
# applies and deletes them with the right contents; img's messages and exit
# codes match qemu-img's. The cases live in snapshot-lib.sh.
. "$(dirname "$0")/snapshot-lib.sh"

tcase img_made "cluster_size=65536" 65536
tcase img_made "cluster_size=512,refcount_bits=64" 512
tcase img_made "compat=0.10,cluster_size=65536,extended_l2=off" 65536
tcase errors
finish
