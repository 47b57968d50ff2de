/* SPDX-License-Identifier: MIT */
/*
 * Commit (qemu-img commit): copy what the layers above a base allocate into
 * that base, then empty the top layer. Written once on top of the driver
 * interface: block status finds the ranges allocated above the base (a range
 * past the end of a short intermediate layer counts as allocated zeroes
 * there, as in QEMU), reads of the top return their contents, and zero
 * ranges become zero requests on the base. The base is reopened read-write in
 * place in the chain for the copy and flushed before the top is emptied, so a
 * crash at any point leaves every layer readable with the top's contents
 * unchanged. The top is read ahead through the async engine
 * (lib/pipeline.c) while the base is written in order. Also the chain lookup by name that commit -b and rebase use.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

/* Reads of the top go ahead, COMMIT_DEPTH of this size in flight, while
 * the base is written in order. */
#define COMMIT_BUF_SIZE (2u << 20)
#define COMMIT_DEPTH 8

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

struct img *img_chain_find(struct img *img, const char *name)
{
	if (!name)
		return NULL;
	for (struct img *p = img; p->backing; p = p->backing) {
		struct img *l = p->backing;

		if ((p->backing_name && !strcmp(p->backing_name, name)) ||
		    same_file(name, l->filename))
			return l;
	}
	return NULL;
}

int img_chain_allocated_above(struct img *top, struct img *base, uint64_t off,
			      uint64_t len, uint64_t *n, bool *zero)
{
	struct img *l = top;
	struct img_extent ext;
	int ret;

	for (;;) {
		struct img *b = l->backing;

		ret = img_block_status(l, off, len, IMG_BS_NO_CHAIN, &ext);
		if (ret < 0)
			return ret;
		*n = ext.len;
		if (ext.flags & IMG_EXT_ALLOCATED) {
			*zero = ext.flags & IMG_EXT_ZERO;
			return 1;
		}
		if (b == base)
			return 0;
		if (!b)
			return img_error(-EINVAL,
					 "'%s' is not in the backing chain",
					 img_filename(base));
		if (off >= img_size(b)) {
			/* Reads stop at the short layer: zeroes there. */
			*zero = true;
			return 1;
		}
		len = img_min(ext.len, img_size(b) - off);
		l = b;
	}
}

/* Replace the read-only layer parent->backing by a read-write opening of
 * the same file, keeping what lies below it. The read-only opening is closed
 * first (its image locks keep writers out, this one too); should the
 * read-write opening fail, the file is opened read-only again. */
static int reopen_rw(struct img *parent)
{
	struct img *old = parent->backing, *below = old->backing, *nb;
	struct img_open_opts o = {
		.format = old->drv->name,
		.flags = (old->flags & ~IMG_OPEN_RDONLY) | IMG_OPEN_NO_BACKING,
		.io = old->io_kind,
		.cache_size = old->cache_size,
	};
	unsigned depth = old->depth,
		 ro_flags = old->flags | IMG_OPEN_NO_BACKING;
	char *name = strdup(old->filename);
	int ret, ret2;

	if (!name)
		return img_error(-ENOMEM, "out of memory");
	old->backing = NULL;
	parent->backing = NULL;
	img_close(old);
	ret = img_open(name, &o, &nb);
	if (ret < 0) {
		ret = img_error(ret, "could not reopen '%s' read-write: %s",
				name, img_last_error());
		o.flags = ro_flags;
		ret2 = img_open(name, &o, &nb);
		if (ret2 < 0) {
			img_close(below);
			free(name);
			return ret;
		}
	}
	free(name);
	nb->flags &= ~IMG_OPEN_NO_BACKING;
	nb->depth = depth;
	nb->backing = below;
	parent->backing = nb;
	return ret;
}

static void report(const struct img_progress *p, uint64_t done, uint64_t total)
{
	if (p && p->fn)
		p->fn(p->opaque, done, total);
}

enum commit_kind {
	COMMIT_SKIP, /* not allocated above the base */
	COMMIT_ZERO,
	COMMIT_DATA,
};

struct commit {
	struct img *top, *base;
	uint64_t size;
	const struct img_progress *progress;
	uint64_t off; /* next range to look up */
	uint64_t run_off, run_end; /* the data range being cut into pieces */
};

/* The ranges allocated above the base, data ranges cut into buffers. */
static int commit_next(void *opaque, struct img_pipe_chunk *c)
{
	struct commit *m = opaque;
	uint64_t n;
	bool zero = false;
	int ret;

	if (m->run_off == m->run_end) {
		if (m->off >= m->size)
			return 0;
		ret = img_chain_allocated_above(
			m->top, m->base, m->off,
			img_min(m->size - m->off, 64ull << 20), &n, &zero);
		if (ret < 0)
			return ret;
		c->off = m->off;
		c->len = n;
		c->last = true;
		m->off += n;
		if (!ret || zero) {
			c->kind = ret ? COMMIT_ZERO : COMMIT_SKIP;
			return 1;
		}
		m->run_off = c->off;
		m->run_end = m->off;
	}
	c->kind = COMMIT_DATA;
	c->off = m->run_off;
	c->len = img_min(m->run_end - m->run_off, COMMIT_BUF_SIZE);
	m->run_off += c->len;
	c->last = m->run_off == m->run_end;
	c->n_reads = 1;
	c->reads[0] = (struct img_pipe_read){ .img = m->top,
					      .off = c->off,
					      .len = c->len };
	return 1;
}

static int commit_consume(void *opaque, struct img_pipe_chunk *c)
{
	struct commit *m = opaque;
	int ret = img_pipe_error(c);

	if (ret < 0)
		return ret;
	if (c->kind == COMMIT_ZERO)
		ret = img_zero(m->base, c->off, c->len, IMG_ZERO_MAY_UNMAP);
	else if (c->kind == COMMIT_DATA)
		ret = img_write(m->base, c->reads[0].buf, c->off, c->len, 0);
	if (ret < 0)
		return ret;
	/* Progress moves once per range looked up, as it always did. */
	if (c->last)
		report(m->progress, c->off + c->len, m->size);
	return 0;
}

static const struct img_pipe_ops commit_ops = {
	.next = commit_next,
	.consume = commit_consume,
};

int img_commit(struct img *top, struct img *base, unsigned flags,
	       const struct img_progress *progress)
{
	struct img *parent;
	uint64_t size = img_size(top);
	int ret = 0;

	if (!top->backing)
		return img_error(-EINVAL, "Image does not have a backing file");
	if (!base)
		base = top->backing;
	for (parent = top; parent->backing && parent->backing != base;
	     parent = parent->backing)
		;
	if (!parent->backing)
		return img_error(-EINVAL,
				 "'%s' is not in the backing chain of '%s'",
				 img_filename(base), img_filename(top));
	if (!(flags & IMG_COMMIT_KEEP) && img_read_only(top))
		return img_error(-EROFS, "cannot empty '%s': opened read-only",
				 img_filename(top));
	if (img_read_only(base)) {
		ret = reopen_rw(parent);
		if (ret < 0)
			return ret;
		base = parent->backing;
	}
	if (img_size(base) < size) {
		ret = img_resize(base, size, 0, IMG_PREALLOC_OFF);
		if (ret < 0)
			return ret;
	}
	report(progress, 0, size);
	{
		struct commit m = {
			.top = top,
			.base = base,
			.size = size,
			.progress = progress,
		};

		ret = img_pipe_run(&commit_ops, &m, COMMIT_BUF_SIZE,
				   COMMIT_DEPTH);
	}
	if (ret >= 0)
		ret = img_flush(base);
	if (ret < 0 || (flags & IMG_COMMIT_KEEP) || !top->drv->amend ||
	    !top->drv->amend->make_empty)
		return ret < 0 ? ret : 0;
	img_lock_whole(top);
	ret = backend_make_empty(top);
	pthread_mutex_unlock(&top->lock);
	if (ret < 0)
		return img_error(ret, "Could not empty %s: %s",
				 img_filename(top), img_last_error());
	return img_flush(top);
}
