#!/bin/bash
# SPDX-License-Identifier: MIT
# Internal snapshots with qemu-img 7.2, the less common paths: img resize of
# images with snapshots as qemu-img does it (v3 grows and shrinks, v2
# refuses); snapshot table entries with unknown extra data (kept) or none
# (completed); check -r all repairing a snapshot's refcounts. The cases live
# in snapshot-lib.sh.
. "$(dirname "$0")/snapshot-lib.sh"

tcase resized
tcase extra_data
finish
