/* SPDX-License-Identifier: MIT */
/*
 * Amend (qemu-img amend -o): change format options of an existing image
 * through the driver's amend op, under the image lock. The generic "size"
 * option is a resize (shrinking allowed, as qemu-img amend does); a change
 * of the backing file name reopens the backing chain when it was open.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

int img_amend(struct img *img, const struct img_kv *opts, size_t n_opts,
	      const struct img_progress *progress)
{
	struct img_kv *rest;
	char *old_name = NULL;
	uint64_t size = 0;
	bool has_size = false;
	size_t n = 0;
	int ret;

	if (!img->drv->amend || !img->drv->amend->amend)
		return img_error(
			-ENOTSUP,
			"Format driver '%s' does not support option amendment",
			img->drv->name);
	if (img_read_only(img))
		return img_error(-EROFS, "%s: '%s' is opened read-only",
				 img->drv->name, img_filename(img));
	rest = calloc(n_opts ? n_opts : 1, sizeof(*rest));
	if (!rest)
		return img_error(-ENOMEM, "out of memory");
	for (size_t i = 0; i < n_opts; i++) {
		if (opts[i].key && !strcmp(opts[i].key, "size")) {
			ret = img_parse_size(opts[i].value ? opts[i].value : "",
					     &size);
			if (ret < 0) {
				ret = img_error(
					-EINVAL,
					"Parameter 'size' expects a size");
				goto out;
			}
			has_size = true;
			continue;
		}
		rest[n++] = opts[i];
	}
	if (img->backing_name) {
		old_name = strdup(img->backing_name);
		if (!old_name) {
			ret = img_error(-ENOMEM, "out of memory");
			goto out;
		}
	}
	img_lock_whole(img);
	ret = backend_amend(img, rest, n, progress);
	pthread_mutex_unlock(&img->lock);
	if (ret < 0)
		goto out;
	if (!same_str(old_name, img->backing_name)) {
		img_close(img->backing);
		img->backing = NULL;
		if (img->backing_name && !(img->flags & IMG_OPEN_NO_BACKING)) {
			ret = img_chain_open(img);
			if (ret < 0)
				goto out;
		}
	}
	if (has_size && size != img->size)
		ret = img_resize(img, size, IMG_RESIZE_SHRINK,
				 IMG_PREALLOC_OFF);
out:
	free(old_name);
	free(rest);
	return ret < 0 ? ret : 0;
}
