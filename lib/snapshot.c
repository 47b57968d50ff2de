/* SPDX-License-Identifier: MIT */
/*
 * Internal snapshots at the library boundary: argument and read-only checks,
 * the image lock around the driver's snapshot ops, the -ENOTSUP default for
 * formats without them, and switching a freshly opened image to the
 * read-only view of a snapshot (img_open_opts.snapshot).
 */
#include <stdlib.h>

#include "internal.h"

static int not_supported(struct img *img)
{
	return img_error(-ENOTSUP,
			 "%s: format does not support internal snapshots",
			 img->drv->name);
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

	if (!img->drv->snapshot_list)
		return not_supported(img);
	pthread_mutex_lock(&img->lock);
	ret = img->drv->snapshot_list(img, out, n);
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

	if (!img->drv->snapshot_create)
		return not_supported(img);
	if ((ret = check_name("name", name)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	pthread_mutex_lock(&img->lock);
	ret = img->drv->snapshot_create(img, name);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_apply(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot_apply)
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	pthread_mutex_lock(&img->lock);
	ret = img->drv->snapshot_apply(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_delete(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot_delete)
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0 ||
	    (ret = check_writable(img)) < 0)
		return ret;
	pthread_mutex_lock(&img->lock);
	ret = img->drv->snapshot_delete(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_snapshot_load(struct img *img, const char *name_or_id)
{
	int ret;

	if (!img->drv->snapshot_load)
		return not_supported(img);
	if ((ret = check_name("name or id", name_or_id)) < 0)
		return ret;
	if (!img_read_only(img))
		return img_error(-EINVAL,
				 "snapshot: '%s' can only be opened read-only",
				 name_or_id);
	pthread_mutex_lock(&img->lock);
	ret = img->drv->snapshot_load(img, name_or_id);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}
