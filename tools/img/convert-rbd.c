/* SPDX-License-Identifier: MIT */
/*
 * img convert and Ceph RBD beyond plain copies. Internal snapshots: a qcow2's
 * go to RBD snapshots through the generic --snapshots copy (raw data in RBD
 * has the RBD image's snapshots, lib/snapshot.c), and an RBD image's come
 * back as internal snapshots here, writing per snapshot only the extents
 * librbd reports changed since the previous one (rbd_diff_iterate2), so that
 * a qcow2 target shares every unchanged cluster. Backing chains: -B
 * rbd:POOL/BASE@SNAP on an rbd: target makes the target a clone of that
 * snapshot (protected first), and convert then writes only the top layer's
 * data; from an RBD clone, -B writes only what the clone itself holds.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "convert-rbd.h"

#define CV_RBD_BUF (1u << 20)

bool cv_rbd_name(const char *name)
{
	return !strncmp(name, "rbd:", 4);
}

static bool cv_rbd_zero(const uint8_t *p, size_t len)
{
	return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

/* Bring dst from snapshot from (NULL: nothing) of the image to view. */
static int cv_rbd_copy(struct img *view, const char *from, struct img *dst,
		       uint8_t *buf)
{
	uint64_t size = img_size(view), off = 0;
	int ret = 0;

	while (off < size && ret == 0) {
		bool changed;
		uint64_t n;

		ret = img_rbd_changed(view, from, 0, off, size - off, &changed,
				      &n);
		if (ret < 0)
			break;
		if (!changed) {
			off += n;
			continue;
		}
		n = n < CV_RBD_BUF ? n : CV_RBD_BUF;
		ret = img_read(view, buf, off, n);
		if (ret == 0 && cv_rbd_zero(buf, n))
			ret = from ? img_zero(dst, off, n, IMG_ZERO_MAY_UNMAP) :
				     0;
		else if (ret == 0)
			ret = img_write(dst, buf, off, n, 0);
		off += n;
	}
	return ret;
}

int cv_rbd_snapshots(const char *src_path, const char *src_fmt,
		     unsigned src_flags, struct img *src, struct img *dst)
{
	struct img_snapshot_info *list = NULL;
	struct img *view = NULL;
	uint8_t *buf;
	size_t n = 0;
	bool changed;
	uint64_t len;
	int ret;

	if (img_rbd_changed(src, NULL, 0, 0, 0, &changed, &len) < 0) {
		img_clear_error();
		return -1;
	}
	buf = malloc(CV_RBD_BUF);
	if (!buf)
		return cli_fail(1, "convert: out of memory");
	ret = img_snapshot_list(src, &list, &n);
	if (ret < 0) {
		free(buf);
		return cli_fail(
			1, "convert: cannot list the snapshots of '%s': %s",
			src_path, cli_errmsg(ret));
	}
	for (size_t i = 0; i <= n && ret == 0; i++) {
		const char *what = i < n ? list[i].name : "the live image";

		if (i < n) {
			ret = cli_open_snapshot(src_path, src_fmt, src_flags,
						list[i].id, &view);
			if (ret < 0)
				break;
		} else {
			view = src;
		}
		img_clear_error();
		if (img_size(view) != img_size(dst))
			ret = img_resize(dst, img_size(view), IMG_RESIZE_SHRINK,
					 IMG_PREALLOC_OFF);
		if (ret == 0)
			ret = cv_rbd_copy(view, i ? list[i - 1].name : NULL,
					  dst, buf);
		if (ret == 0 && i < n)
			ret = img_snapshot_create(dst, list[i].name);
		if (ret < 0)
			cli_fail(1, "convert: copying %s: %s", what,
				 cli_errmsg(ret));
		if (view != src)
			img_close(view);
	}
	img_snapshot_list_free(list, n);
	free(buf);
	return ret < 0 ? 1 : 0;
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
	return img_rbd_clone(backing, dst, size);
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
	ret = img_rbd_changed(img, NULL, IMG_RBD_OWN_LAYER, off, ext->len, &own,
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
