/* SPDX-License-Identifier: MIT */
/*
 * The raw format: the guest disk is the host file, byte for byte. The virtual
 * size is the file size (any size, not only multiples of 512); zeroing and
 * discarding punch holes where the file system can, and block status reports
 * the file's holes (SEEK_HOLE) as zero and the rest as data at the same
 * offset, as QEMU's file driver does. Every other format wins a probe against
 * raw, which scores 1.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "img-driver.h"

static int raw_probe(const uint8_t *buf, size_t len)
{
	return 1;
}

static int raw_open(struct img *img, unsigned flags)
{
	uint64_t size;
	int ret;

	ret = img_io_size(img_file(img), &size);
	if (ret < 0)
		return ret;
	img_set_size(img, size);
	img_set_file_is_disk(img);
	return 0;
}

static void raw_close(struct img *img)
{
}

static int raw_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct img_io *io = img_file(img);
	int ret;

	/* Discard is advisory: where holes cannot be punched, keep the data. */
	if (!io->ops->zero)
		return 0;
	ret = io->ops->zero(io, off, len, IMG_IO_ZERO_PUNCH);
	if (ret == -ENOTSUP)
		return 0;
	if (ret < 0)
		return img_error(ret,
				 "raw: discard of %" PRIu64 " bytes at %" PRIu64
				 " failed: %s",
				 len, off, strerror(-ret));
	return 0;
}

static int raw_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	struct img_io *io = img_file(img);
	unsigned io_flags = (flags & IMG_ZERO_MAY_UNMAP) ? IMG_IO_ZERO_PUNCH :
							   0;
	int ret;

	if (flags & IMG_ZERO_DISCARD)
		return raw_discard(img, off, len);
	if (!(flags & IMG_ZERO_FAST))
		return img_io_zero(io, off, len, io_flags);
	/* Fast zeroing only when the backend zeroes without writing. */
	ret = io->ops->zero ? io->ops->zero(io, off, len, io_flags) : -ENOTSUP;
	if (ret == -ENOTSUP && io_flags && io->ops->zero)
		ret = io->ops->zero(io, off, len, 0);
	if (ret == -ENOTSUP)
		return img_error(-ENOTSUP, "raw: '%s' cannot zero quickly",
				 io->path ? io->path : io->ops->name);
	if (ret < 0)
		return img_error(ret,
				 "raw: zeroing %" PRIu64 " bytes at %" PRIu64
				 " failed: %s",
				 len, off, strerror(-ret));
	return 0;
}

/* The file at the same offset; its holes read as zeroes. */
static int raw_map(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m)
{
	bool data;
	int ret;

	m->file_off = off;
	/* A write, like a read, goes to the same offset in the file. A read
	 * of a hole gets zeroes from the file: two lseeks a request
	 * would cost more than they save. */
	if (!m->want_zero || m->write) {
		m->len = len;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		return 0;
	}
	ret = img_io_extent(img_file(img), off, len, &data, &m->len);
	if (ret < 0)
		return ret;
	/* A hole still has a host offset: qemu-img map prints it. */
	m->flags = (data ? IMG_EXT_DATA : IMG_EXT_ZERO) | IMG_EXT_ALLOCATED |
		   IMG_EXT_OFFSET_VALID;
	return 0;
}

/* Make [from, to) of the file hold zeroes with space reserved per prealloc. */
static int raw_preallocate(struct img_io *io, uint64_t from, uint64_t to,
			   enum img_prealloc prealloc)
{
	uint64_t chunk = 1u << 20;
	void *zeroes;
	int ret = 0;

	if (prealloc == IMG_PREALLOC_FALLOC)
		return img_io_allocate(io, from, to - from);
	if (prealloc != IMG_PREALLOC_FULL)
		return 0;
	zeroes = calloc(1, (size_t)chunk);
	if (!zeroes)
		return img_error(-ENOMEM, "raw: out of memory");
	while (from < to) {
		uint64_t n = img_min(to - from, chunk);

		ret = img_io_pwrite(io, zeroes, n, from);
		if (ret < 0)
			break;
		from += n;
	}
	free(zeroes);
	return ret;
}

static int raw_check_prealloc(enum img_prealloc prealloc)
{
	if (prealloc == IMG_PREALLOC_METADATA)
		return img_error(
			-EINVAL,
			"raw: preallocation mode 'metadata' is not supported (off, falloc, full)");
	return 0;
}

static int raw_create(const char *path, struct img_io *file,
		      const struct img_create_opts *opts)
{
	enum img_prealloc prealloc = IMG_PREALLOC_OFF;
	int ret;

	ret = img_opt_prealloc(opts, &prealloc);
	if (ret < 0)
		return ret;
	ret = raw_check_prealloc(prealloc);
	if (ret < 0)
		return ret;
	if (opts->size > INT64_MAX)
		return img_error(-EINVAL, "raw: size %" PRIu64 " is too large",
				 opts->size);
	ret = img_io_truncate(file, 0);
	if (ret < 0)
		return ret;
	ret = raw_preallocate(file, 0, opts->size, prealloc);
	if (ret < 0)
		return ret;
	return img_io_truncate(file, opts->size);
}

static int raw_resize(struct img *img, uint64_t size, unsigned flags,
		      enum img_prealloc prealloc)
{
	struct img_io *io = img_file(img);
	uint64_t old = img_size(img);
	int ret;

	ret = raw_check_prealloc(prealloc);
	if (ret < 0)
		return ret;
	if (size > INT64_MAX)
		return img_error(-EINVAL, "raw: size %" PRIu64 " is too large",
				 size);
	if (size > old) {
		ret = raw_preallocate(io, old, size, prealloc);
		if (ret < 0)
			return ret;
	}
	ret = img_io_truncate(io, size);
	if (ret < 0)
		return ret;
	img_set_size(img, size);
	return 0;
}

static int raw_measure(const struct img_create_opts *opts, struct img *src,
		       struct img_measure *out)
{
	enum img_prealloc prealloc = IMG_PREALLOC_OFF;
	uint64_t size = opts->size;
	int ret;

	ret = img_opt_prealloc(opts, &prealloc);
	if (ret < 0)
		return ret;
	ret = raw_check_prealloc(prealloc);
	if (ret < 0)
		return ret;
	if (src && !size)
		size = img_size(src);
	out->required = size;
	out->fully_allocated = size;
	return 0;
}

static const struct img_opt_desc raw_create_opts[] = {
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ "preallocation", IMG_OPT_STR,
	  "Preallocation mode (allowed values: off, falloc, full)", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct img_create_ops raw_create_ops = {
	.create = raw_create,
	.opts = raw_create_opts,
	.measure = raw_measure,
};

/* raw has no options to amend; it only changes size. */
static const struct img_amend_ops raw_amend_ops = {
	.resize = raw_resize,
};

const struct img_driver raw_driver = {
	.name = "raw",
	.priv_size = 0,
	.thread_safe = true,
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.zero = raw_zero,
	.map = raw_map,
	.create = &raw_create_ops,
	.amend = &raw_amend_ops,
};
