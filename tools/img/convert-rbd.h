/* SPDX-License-Identifier: MIT */
/*
 * img convert and Ceph RBD (tools/img/convert-rbd.c): backing chains mapped
 * onto RBD clones, both ways.
 */
#ifndef CONVERT_RBD_H
#define CONVERT_RBD_H

#include <stdbool.h>

#include "img.h"

/* name is an rbd: name. */
bool cv_rbd_name(const char *name);
/*
 * -B on an rbd: target: create dst as a clone of backing (rbd:POOL/IMAGE@SNAP,
 * format raw) of size bytes. 0 or -errno (with img_last_error()).
 */
int cv_rbd_clone(const char *backing, const char *backing_fmt, const char *dst,
		 uint64_t size);
/*
 * img_block_status for convert; with IMG_BS_NO_CHAIN on an RBD clone, what
 * only the parent holds is reported unallocated (left to the target's
 * backing file).
 */
int cv_rbd_block_status(struct img *img, uint64_t off, uint64_t len,
			unsigned flags, struct img_extent *ext);

#endif
