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
 * the copy leaves the image unchanged in content on its old backing. Both
 * sides are read ahead through the async engine (lib/pipeline.c); the
 * differences are written in order.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define REBASE_BUF_SIZE (2u << 20) /* qemu-img's IO_BUF_SIZE */
#define SECTOR 512
/* Chunks read ahead, each a read of the old and the new side. */
#define REBASE_DEPTH 4

static bool format_known(const char *fmt)
{
	for (const char *const *f = img_formats(); *f; f++)
		if (!strcmp(*f, fmt))
			return true;
	return false;
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

struct rebase {
	struct img *img, *new_b, *prefix;
	uint64_t size, off;
	const struct img_progress *progress;
};

/* A read of [off, off + len) from layer b (none past its end, or for no
 * layer); rebase_consume zeroes the rest of the buffer. */
static void side_read(struct img_pipe_read *r, struct img *b, uint64_t off,
		      uint64_t len)
{
	uint64_t size = b ? img_size(b) : 0;

	*r = (struct img_pipe_read){
		.img = b,
		.off = off,
		.len = off < size ? img_min(len, size - off) : 0,
	};
}

/* Each step of the walk over the image is a chunk, for the progress; the
 * ranges the image does not allocate and whose backing may change come
 * with reads of the old and the new side. */
static int rebase_next(void *opaque, struct img_pipe_chunk *c)
{
	struct rebase *m = opaque;
	struct img *old_b = m->img->backing;
	struct img_extent ext;
	uint64_t off = m->off, n;
	bool zero;
	int ret;

	if (off >= m->size)
		return 0;
	c->off = off;
	ret = img_block_status(m->img, off,
			       img_min(m->size - off, REBASE_BUF_SIZE),
			       IMG_BS_NO_CHAIN, &ext);
	if (ret < 0)
		return ret;
	n = ext.len;
	m->off = off + n;
	c->len = n;
	if (ext.flags & IMG_EXT_ALLOCATED)
		return 1;
	if (m->prefix) {
		/* Unchanged since the new backing: nothing to do. */
		if (m->prefix == old_b)
			return 1;
		if (off < img_size(old_b)) {
			ret = img_chain_allocated_above(
				old_b, m->prefix, off,
				img_min(n, img_size(old_b) - off), &n, &zero);
			if (ret < 0)
				return ret;
			m->off = off + n;
			c->len = n;
			if (!ret)
				return 1;
		}
	}
	c->n_reads = 2;
	side_read(&c->reads[0], old_b, off, n);
	side_read(&c->reads[1], m->new_b, off, n);
	return 1;
}

static int rebase_consume(void *opaque, struct img_pipe_chunk *c)
{
	struct rebase *m = opaque;
	int ret;

	if (m->progress && m->progress->fn)
		m->progress->fn(m->progress->opaque, c->off, m->size);
	ret = img_pipe_error(c);
	if (ret < 0 || !c->n_reads)
		return ret;
	for (unsigned i = 0; i < 2; i++)
		memset(c->reads[i].buf + c->reads[i].len, 0,
		       c->len - c->reads[i].len);
	return copy_differences(m->img, c->reads[0].buf, c->reads[1].buf,
				!c->reads[0].len, c->off, c->len);
}

static const struct img_pipe_ops rebase_ops = {
	.next = rebase_next,
	.consume = rebase_consume,
};

static int copy_changed(struct img *img, struct img *new_b, struct img *prefix,
			const struct img_progress *progress)
{
	struct rebase m = {
		.img = img,
		.new_b = new_b,
		.prefix = prefix,
		.size = img_size(img),
		.progress = progress,
	};
	int ret = img_pipe_run(&rebase_ops, &m, REBASE_BUF_SIZE, REBASE_DEPTH);

	if (ret < 0)
		return ret;
	if (progress && progress->fn)
		progress->fn(progress->opaque, m.size, m.size);
	return img_flush(img);
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
