/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps at the library boundary: name, granularity,
 * range and read-only checks, the image lock around the driver's bitmap ops
 * (struct img_bitmap_ops), -ENOTSUP for formats without bitmaps, and merge,
 * written once on top of the ops so that it also works between two images.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* QEMU's limits on names and granularity. */
#define BITMAP_MAX_NAME 1023
#define BITMAP_MIN_GRAN 512ull
#define BITMAP_MAX_GRAN (1ull << 31)

static int not_supported(struct img *img)
{
	return img_error(-ENOTSUP,
			 "%s: cannot store persistent bitmaps in '%s'",
			 img->drv->name, img_filename(img));
}

static int check_name(const char *name)
{
	if (!name || !*name)
		return img_error(-EINVAL,
				 "bitmap: bitmap name cannot be empty");
	if (strlen(name) > BITMAP_MAX_NAME)
		return img_error(-EINVAL,
				 "bitmap: name length exceeds maximum (%d "
				 "characters)",
				 BITMAP_MAX_NAME);
	return 0;
}

/* Common checks; 0 when the op may run. */
static int prepare(struct img *img, const char *name, bool write)
{
	int ret;

	if (!img->drv->bitmap)
		return not_supported(img);
	ret = check_name(name);
	if (ret < 0)
		return ret;
	if (write && img_read_only(img))
		return img_error(-EROFS,
				 "%s: cannot change bitmaps of '%s': opened "
				 "read-only",
				 img->drv->name, img_filename(img));
	return 0;
}

int img_bitmap_list(struct img *img, struct img_bitmap_info **out, size_t *n)
{
	int ret;

	if (!img->drv->bitmap)
		return not_supported(img);
	img_lock_whole(img);
	ret = backend_bitmap_list(img, out, n);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

void img_bitmap_list_free(struct img_bitmap_info *list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++)
		free(list[i].name);
	free(list);
}

int img_bitmap_add(struct img *img, const char *name, uint64_t granularity,
		   bool disabled)
{
	int ret = prepare(img, name, true);

	if (ret < 0)
		return ret;
	if (granularity &&
	    (!img_is_pow2(granularity) || granularity < BITMAP_MIN_GRAN ||
	     granularity > BITMAP_MAX_GRAN))
		return img_error(-EINVAL,
				 "bitmap: granularity %" PRIu64
				 " must be a power of 2 from 512 to 2G",
				 granularity);
	img_lock_whole(img);
	ret = backend_bitmap_add(img, name, granularity, disabled);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_bitmap_remove(struct img *img, const char *name)
{
	int ret = prepare(img, name, true);

	if (ret < 0)
		return ret;
	img_lock_whole(img);
	ret = backend_bitmap_remove(img, name);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_bitmap_clear(struct img *img, const char *name)
{
	int ret = prepare(img, name, true);

	if (ret < 0)
		return ret;
	img_lock_whole(img);
	ret = backend_bitmap_clear(img, name);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_bitmap_enable(struct img *img, const char *name, bool enable)
{
	int ret = prepare(img, name, true);

	if (ret < 0)
		return ret;
	img_lock_whole(img);
	ret = backend_bitmap_enable(img, name, enable);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_bitmap_dirty(struct img *img, const char *name, uint64_t off,
		     uint64_t len, bool *dirty, uint64_t *run_len)
{
	int ret = prepare(img, name, false);

	if (ret < 0)
		return ret;
	if (len == 0 || off >= img->size || len > img->size - off)
		return img_error(-EINVAL,
				 "bitmap: range %" PRIu64 "+%" PRIu64
				 " is outside the image (size %" PRIu64 ")",
				 off, len, img->size);
	img_lock_whole(img);
	ret = backend_bitmap_dirty(img, name, off, len, dirty, run_len);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_bitmap_merge(struct img *img, const char *name, struct img *src,
		     const char *src_name)
{
	uint64_t off = 0, size = img->size;
	bool dirty = false;
	uint64_t run = 0;
	int ret = prepare(img, name, true);

	if (ret < 0)
		return ret;
	if (!src->drv->bitmap)
		return not_supported(src);
	ret = check_name(src_name);
	if (ret < 0)
		return ret;
	if (src->size != size)
		return img_error(-EINVAL,
				 "bitmap: bitmaps are incompatible and can't "
				 "be merged (sizes %" PRIu64 " and %" PRIu64
				 ")",
				 src->size, size);
	/* Both must exist and be usable even when nothing is dirty. */
	if (size == 0)
		return 0;
	img_lock_whole(img);
	ret = backend_bitmap_set_dirty(img, name, 0, 0);
	pthread_mutex_unlock(&img->lock);
	while (ret == 0 && off < size) {
		ret = img_bitmap_dirty(src, src_name, off, size - off, &dirty,
				       &run);
		if (ret < 0 || !dirty) {
			off += run;
			continue;
		}
		img_lock_whole(img);
		ret = backend_bitmap_set_dirty(img, name, off, run);
		pthread_mutex_unlock(&img->lock);
		off += run;
	}
	if (ret < 0)
		return ret;
	return img_flush(img);
}
