/* SPDX-License-Identifier: MIT */
/*
 * Rebase (qemu-img rebase): point an image at another backing file. Safe
 * mode keeps what the image reads: for every range the image does not
 * allocate itself, the old and the new backing are read (zeroes past the end
 * of either, and for no backing) and the 512-byte sectors that differ are
 * written into the image from the old side (zero requests where the old
 * side is past its end), as QEMU does. When the new backing is a layer of the
 * old chain, only ranges that the layers above it allocate are compared.
 * Only then is the header rewritten (img_set_backing, which opens the new
 * chain before it writes and keeps the old one on failure): a crash during
 * the copy leaves the image unchanged in content on its old backing.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define REBASE_BUF_SIZE (2u << 20) /* qemu-img's IO_BUF_SIZE */
#define SECTOR 512

static bool format_known(const char *fmt)
{
	for (const char *const *f = img_formats(); *f; f++)
		if (!strcmp(*f, fmt))
			return true;
	return false;
}

/* Read [off, off + len) of layer b into buf, zeroes past its end (or for
 * no layer); *beyond when all of it is past the end. */
static int read_side(struct img *b, uint8_t *buf, uint64_t off, uint64_t len,
		     bool *beyond)
{
	uint64_t size = b ? img_size(b) : 0, n = 0;
	int ret;

	*beyond = off >= size;
	if (!*beyond) {
		n = img_min(len, size - off);
		ret = img_read(b, buf, off, n);
		if (ret < 0)
			return ret;
	}
	memset(buf + n, 0, len - n);
	return 0;
}

/* Write the sectors of [off, off + len) where old and new differ. */
static int copy_differences(struct img *img, const uint8_t *old,
			    const uint8_t *new, bool old_beyond, uint64_t off,
			    uint64_t len)
{
	uint64_t pos = 0;

	while (pos < len) {
		uint64_t end = img_min(len, pos + SECTOR);
		bool differ = memcmp(old + pos, new + pos, end - pos) != 0;
		uint64_t start = pos;
		int ret;

		while (end < len) {
			uint64_t next = img_min(len, end + SECTOR);

			if ((memcmp(old + end, new + end, next - end) != 0) !=
			    differ)
				break;
			end = next;
		}
		pos = end;
		if (!differ)
			continue;
		if (old_beyond)
			ret = img_zero(img, off + start, end - start, 0);
		else
			ret = img_write(img, old + start, off + start,
					end - start, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int copy_changed(struct img *img, struct img *new_b, struct img *prefix,
			const struct img_progress *progress)
{
	struct img *old_b = img->backing;
	uint64_t size = img_size(img), off, n;
	uint8_t *bold = malloc(REBASE_BUF_SIZE),
		*bnew = malloc(REBASE_BUF_SIZE);
	int ret = 0;

	if (!bold || !bnew) {
		ret = img_error(-ENOMEM, "out of memory");
		goto out;
	}
	for (off = 0; off < size; off += n) {
		struct img_extent ext;
		bool zero, old_beyond, new_beyond;

		if (progress && progress->fn)
			progress->fn(progress->opaque, off, size);
		ret = img_block_status(img, off,
				       img_min(size - off, REBASE_BUF_SIZE),
				       IMG_BS_NO_CHAIN, &ext);
		if (ret < 0)
			goto out;
		n = ext.len;
		if (ext.flags & IMG_EXT_ALLOCATED)
			continue;
		if (prefix) {
			/* Unchanged since the new backing: nothing to do. */
			if (prefix == old_b)
				continue;
			if (off < img_size(old_b)) {
				ret = img_chain_allocated_above(
					old_b, prefix, off,
					img_min(n, img_size(old_b) - off), &n,
					&zero);
				if (ret < 0)
					goto out;
				if (!ret)
					continue;
			}
		}
		ret = read_side(old_b, bold, off, n, &old_beyond);
		if (ret < 0)
			goto out;
		ret = read_side(new_b, bnew, off, n, &new_beyond);
		if (ret < 0)
			goto out;
		ret = copy_differences(img, bold, bnew, old_beyond, off, n);
		if (ret < 0)
			goto out;
	}
	if (progress && progress->fn)
		progress->fn(progress->opaque, size, size);
	ret = img_flush(img);
out:
	free(bold);
	free(bnew);
	return ret;
}

int img_rebase(struct img *img, const char *backing, const char *fmt,
	       unsigned flags, const struct img_progress *progress)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = IMG_OPEN_RDONLY | IMG_OPEN_SHARED |
			 (img->flags & (IMG_OPEN_DIRECT | IMG_OPEN_UNSAFE)),
		.io = img->io_kind,
		.cache_size = img->cache_size,
	};
	struct img *new_b = NULL, *prefix = NULL;
	char *path = NULL;
	int ret;

	if (backing && !*backing)
		backing = NULL;
	if (fmt && !*fmt)
		fmt = NULL;
	if (fmt && !format_known(fmt))
		return img_error(-EINVAL, "Invalid format name: '%s'", fmt);
	if (backing && !fmt)
		return img_error(
			-EINVAL,
			"Could not change the backing file to '%s': backing format must be specified",
			backing);
	if (img_read_only(img))
		return img_error(-EROFS, "'%s' is opened read-only",
				 img_filename(img));
	if (flags & IMG_REBASE_UNSAFE)
		return img_set_backing(img, backing, fmt);
	if (img->backing_name && !img->backing)
		return img_error(
			-EINVAL,
			"safe rebase needs the old backing chain of '%s' open",
			img_filename(img));
	if (backing) {
		ret = img_path_relative(img->filename, backing, &path);
		if (ret < 0)
			return ret;
		prefix = img_chain_find(img, path);
		if (prefix) {
			new_b = prefix;
		} else {
			ret = img_open(path, &o, &new_b);
			if (ret < 0) {
				ret = img_error(
					ret,
					"Could not open new backing file '%s': %s",
					backing, img_last_error());
				goto out;
			}
		}
	}
	ret = copy_changed(img, new_b, prefix, progress);
	if (ret >= 0)
		ret = img_set_backing(img, backing, fmt);
out:
	if (!prefix)
		img_close(new_b);
	free(path);
	return ret;
}
