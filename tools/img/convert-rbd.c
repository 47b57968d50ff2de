/* SPDX-License-Identifier: MIT */
/*
 * img convert between backing chains and Ceph RBD clones: -B
 * rbd:POOL/BASE@SNAP on an rbd: target makes the target a clone of that
 * snapshot (protected first), and convert then writes only the top layer's
 * data; from an RBD clone, -B writes only what the clone itself holds.
 * (Internal snapshots need nothing here: raw data in RBD has the RBD image's
 * snapshots, lib/snapshot.c, and convert --snapshots in cmd-snapshot.c copies
 * what librbd reports changed between them.)
 */
#include <string.h>

#include "cli.h"
#include "convert-rbd.h"

bool cv_rbd_name(const char *name)
{
	return !strncmp(name, "rbd:", 4);
}

int cv_rbd_clone(const char *backing, const char *backing_fmt, const char *dst,
		 uint64_t size)
{
	if (strcmp(backing_fmt, "raw"))
		return img_error(-EINVAL,
				 "the backing of an RBD clone is raw data in "
				 "RBD (-F raw), not %s",
				 backing_fmt);
	img_clear_error();
	return img_clone(backing, dst, size);
}

int cv_rbd_block_status(struct img *img, uint64_t off, uint64_t len,
			unsigned flags, struct img_extent *ext)
{
	int ret = img_block_status(img, off, len, flags, ext);
	bool own;
	uint64_t n;

	if (ret < 0 || !(flags & IMG_BS_NO_CHAIN) ||
	    !(ext->flags & IMG_EXT_ALLOCATED) ||
	    !cv_rbd_name(img_filename(img)))
		return ret;
	ret = img_changed(img, NULL, IMG_CHANGED_OWN_LAYER, off, ext->len, &own,
			  &n);
	if (ret == -ENOTSUP) {
		/* A format other than raw inside RBD: its own layers. */
		img_clear_error();
		return 0;
	}
	if (ret < 0)
		return ret;
	if (!own)
		ext->flags = 0;
	ext->len = n;
	return 0;
}
