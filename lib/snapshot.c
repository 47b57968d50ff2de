/* SPDX-License-Identifier: MIT */
/*
 * Internal snapshots at the library boundary: argument and read-only checks,
 * the image lock around the driver's snapshot ops, the -ENOTSUP default for
 * formats without them, and switching a freshly opened image to the
 * read-only view of a snapshot (img_open_opts.snapshot). An image whose
 * disk is its storage byte for byte (raw data kept in Ceph RBD) has the
 * storage's snapshots, as in QEMU, and img_changed and img_clone reach the
 * storage's change tracking and clones.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int not_supported(struct img *img)
{
	return img_error(-ENOTSUP,
			 "%s: format does not support internal snapshots",
			 img->drv->name);
}

/* The disk is the storage, which has snapshots of its own (lib/io-rbd.c). */
static bool io_snapshots(struct img *img)
{
	return img->file_is_disk && img->file->ops->snapshot &&
	       img->file->ops->snapshot_list;
}

/* A snapshot op on such a backend, under the image lock. */
static int io_snapshot(struct img *img, enum img_io_snap_op op,
		       const char *name_or_id)
{
	uint64_t size;
	int ret;

	img_lock_whole(img);
	ret = img->file->ops->snapshot(img->file, op, name_or_id, &size);
	if (ret >= 0 && (op == IMG_IO_SNAP_APPLY || op == IMG_IO_SNAP_LOAD))
		img_set_size(img, size);
	pthread_mutex_unlock(&img->lock);
	return ret;
}

static int check_name(const char *what, const char *name)
{
	if (!name)
		return img_error(-EINVAL, "snapshot: no snapshot %s given",
				 what);
	return 0;
}

static int check_writable(struct img *img)
{
	if (img_read_only(img))
		return img_error(
			-EROFS,
			"%s: cannot change snapshots of '%s': opened read-only",
			img->drv->name, img_filename(img));
	return 0;
}

int img_snapshot_list(struct img *img, struct img_snapshot_info **out,
		      size_t *n)
{
	int ret;

	if (!img->drv->snapshot && !io_snapshots(img))
		return not_supported(img);
	img_lock_whole(img);
	ret = img->drv->snapshot ?
		      backend_snapshot_list(img, out, n) :
		      img->file->ops->snapshot_list(img->file, out, n);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

void img_snapshot_list_free(struct img_snapshot_info *list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++) {
		free(list[i].id);
		free(list[i].name);
	}
	free(list);
}

int img_snapshot_create(struct img *img, const char *name)
{
	int ret;

	if (!img->drv->snapshot && !io_snapshots(img))
		return not_supported(img);
	if ((ret = check_name("name", name)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	if (!img->drv->snapshot)
		return io_snapshot(img, IMG_IO_SNAP_CREATE, name);
	img_lock_whole(img);
	ret = backend_snapshot_create(img, name);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_apply(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot && !io_snapshots(img))
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	if (!img->drv->snapshot)
		return io_snapshot(img, IMG_IO_SNAP_APPLY, name_or_id);
	img_lock_whole(img);
	ret = backend_snapshot_apply(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_delete(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot && !io_snapshots(img))
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	if (!img->drv->snapshot)
		return io_snapshot(img, IMG_IO_SNAP_DELETE, name_or_id);
	img_lock_whole(img);
	ret = backend_snapshot_delete(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_load(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot && !io_snapshots(img))
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0)
		return ret;
	if (!img_read_only(img))
		return img_error(-EINVAL,
				 "snapshot: '%s' can only be opened read-only",
				 name_or_id);
	if (!img->drv->snapshot)
		return io_snapshot(img, IMG_IO_SNAP_LOAD, name_or_id);
	img_lock_whole(img);
	ret = backend_snapshot_load(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_changed(struct img *img, const char *from, unsigned flags, uint64_t off,
		uint64_t len, bool *changed, uint64_t *n)
{
	struct img_io *io = img->file;

	if (!img->file_is_disk || !io->ops->changed)
		return img_error(
			-ENOTSUP,
			"snapshot: '%s' is not a disk kept as is in storage that tracks changes",
			img_filename(img));
	return io->ops->changed(io, from, flags, off, len, changed, n);
}

int img_clone(const char *parent, const char *child, uint64_t size)
{
	struct img_io *io;
	int ret;

	if (!parent || !child)
		return img_error(-EINVAL, "clone: no parent or no child given");
	ret = img_io_open(parent, IMG_IO_RDONLY, IMG_IO_AUTO, &io);
	if (ret < 0)
		return ret;
	ret = io->ops->clone ?
		      io->ops->clone(io, child, size) :
		      img_error(
			      -ENOTSUP,
			      "clone: '%s' is not a snapshot of storage that makes clones",
			      parent);
	img_io_close(io);
	return ret < 0 ? ret : 0;
}
