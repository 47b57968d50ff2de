/* SPDX-License-Identifier: MIT */
/*
 * The pipelined read loop that commit, rebase, compare and dd share: a
 * producer cuts the work into chunks (each with up to IMG_PIPE_MAX_READS
 * reads), their reads go on one async engine up to depth chunks ahead, and
 * a consumer gets the chunks on the calling thread strictly in the order
 * they were produced, however the reads complete. Everything a consumer
 * does (output, progress, writes, the first error it meets) therefore
 * happens in the same order as in a loop of synchronous reads; a producer
 * error too is held back until the chunks made before it are consumed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PIPE_MAX_DEPTH 32
/* O_DIRECT needs aligned buffers; the engine bounces the rest. */
#define PIPE_BUF_ALIGN 4096

struct pipe_read {
	struct img_aio_req req;
	struct pipe_slot *slot;
	struct img_pipe_read *r;
};

struct pipe_slot {
	struct img_pipe_chunk c;
	struct pipe_read reads[IMG_PIPE_MAX_READS];
	unsigned pending;
};

struct pipe {
	const struct img_pipe_ops *ops;
	void *opaque;
	struct img_aio *aio;
	struct pipe_slot slots[PIPE_MAX_DEPTH];
	/* Free buffers, last freed on top: when reads complete as soon as
	 * they are made (the page cache), the same ones stay in the CPU's
	 * caches. */
	uint8_t *free_bufs[PIPE_MAX_DEPTH * IMG_PIPE_MAX_READS];
	unsigned n_free;
	unsigned depth;
	uint64_t buf_size;
	uint64_t produced, consumed;
	bool eof;
};

static void set_msg(char *dst, const char *msg, int ret)
{
	snprintf(dst, IMG_PIPE_MSG_MAX, "%s",
		 msg && *msg ? msg : strerror(-ret));
}

static void read_done(struct img_aio_req *req, int ret)
{
	struct pipe_read *pr = req->opaque;

	pr->r->ret = ret;
	if (ret < 0)
		set_msg(pr->r->msg, req->error, ret);
	pr->slot->pending--;
}

static int get_buf(struct pipe *p, uint8_t **buf)
{
	if (p->n_free) {
		*buf = p->free_bufs[--p->n_free];
		return 0;
	}
	if (posix_memalign((void **)buf, PIPE_BUF_ALIGN, p->buf_size))
		return img_error(-ENOMEM,
				 "pipeline: out of memory for a "
				 "%" PRIu64 "-byte buffer",
				 p->buf_size);
	return 0;
}

/* Give back a consumed slot's buffers, the first read's on top. */
static void put_bufs(struct pipe *p, struct pipe_slot *s)
{
	for (unsigned i = s->c.n_reads; i-- > 0;)
		if (s->c.reads[i].buf)
			p->free_bufs[p->n_free++] = s->c.reads[i].buf;
}

/* Start the reads next() asked for; one that cannot start fails alone. */
static int slot_start(struct pipe *p, struct pipe_slot *s)
{
	struct img_pipe_chunk *c = &s->c;

	if (c->n_reads > IMG_PIPE_MAX_READS)
		return img_error(-EINVAL, "pipeline: %u reads in one chunk",
				 c->n_reads);
	for (unsigned i = 0; i < c->n_reads; i++)
		c->reads[i].buf = NULL;
	for (unsigned i = 0; i < c->n_reads; i++) {
		struct img_pipe_read *r = &c->reads[i];
		struct pipe_read *pr = &s->reads[i];
		int ret;

		if (r->len > p->buf_size)
			return img_error(-EINVAL,
					 "pipeline: read of %" PRIu64
					 " bytes in %" PRIu64 "-byte buffers",
					 r->len, p->buf_size);
		ret = get_buf(p, &r->buf);
		if (ret < 0)
			return ret;
		r->ret = 0;
		r->msg[0] = 0;
		if (!r->len)
			continue;
		memset(&pr->req, 0, sizeof(pr->req));
		pr->req.op = IMG_AIO_READ;
		pr->req.buf = r->buf;
		pr->req.off = r->off;
		pr->req.len = r->len;
		pr->req.done = read_done;
		pr->req.opaque = pr;
		pr->slot = s;
		pr->r = r;
		s->pending++;
		img_clear_error();
		ret = img_aio_submit(p->aio, r->img, &pr->req);
		if (ret < 0) {
			s->pending--;
			r->ret = ret;
			set_msg(r->msg, img_last_error(), ret);
		}
	}
	return 0;
}

/* Fill the free slots with chunks from next(). */
static int produce(struct pipe *p)
{
	while (!p->eof && p->produced - p->consumed < p->depth) {
		struct pipe_slot *s = &p->slots[p->produced % p->depth];
		int ret;

		memset(&s->c, 0, sizeof(s->c));
		s->pending = 0;
		img_clear_error();
		ret = p->ops->next(p->opaque, &s->c);
		if (ret == 0) {
			p->eof = true;
			break;
		}
		p->produced++;
		if (ret < 0) {
			/* Delivered in turn; nothing is made after it. */
			s->c.ret = ret;
			s->c.n_reads = 0;
			set_msg(s->c.msg, img_last_error(), ret);
			p->eof = true;
			break;
		}
		ret = slot_start(p, s);
		if (ret < 0)
			return ret;
		/* Reads all done as soon as made (the page cache) gain
		 * nothing from going further ahead: consume first, in warm
		 * buffers. */
		ret = img_aio_poll(p->aio);
		if (ret < 0)
			return ret;
		if (!img_aio_inflight(p->aio))
			break;
	}
	return 0;
}

static int run(struct pipe *p)
{
	for (;;) {
		struct pipe_slot *s;
		int ret = produce(p);

		if (ret < 0)
			return ret;
		if (p->consumed == p->produced)
			return 0;
		s = &p->slots[p->consumed % p->depth];
		while (s->pending) {
			ret = img_aio_wait(p->aio);
			if (ret < 0)
				return ret;
		}
		p->consumed++;
		img_clear_error();
		ret = p->ops->consume(p->opaque, &s->c);
		put_bufs(p, s);
		if (ret)
			return ret;
	}
}

int img_pipe_run(const struct img_pipe_ops *ops, void *opaque,
		 uint64_t buf_size, unsigned depth)
{
	struct pipe *p;
	char msg[IMG_PIPE_MSG_MAX];
	int ret;

	if (!ops || !ops->next || !ops->consume || !buf_size)
		return img_error(-EINVAL, "pipeline: no producer, consumer "
					  "or buffer size");
	p = calloc(1, sizeof(*p));
	if (!p)
		return img_error(-ENOMEM, "pipeline: out of memory");
	p->ops = ops;
	p->opaque = opaque;
	p->depth = depth < 1		  ? 1 :
		   depth > PIPE_MAX_DEPTH ? PIPE_MAX_DEPTH :
					    depth;
	p->buf_size = buf_size;
	ret = img_aio_new(0, &p->aio);
	if (ret >= 0)
		ret = run(p);
	/* Reads still in flight when a consumer stops are let finish: their
	 * buffers are freed below. Draining sets no message of its own, but
	 * keep the one the result carries anyway. */
	set_msg(msg, img_last_error(), ret < 0 ? ret : -EIO);
	img_aio_free(p->aio);
	for (uint64_t i = p->consumed; i < p->produced; i++)
		put_bufs(p, &p->slots[i % p->depth]);
	while (p->n_free)
		free(p->free_bufs[--p->n_free]);
	free(p);
	if (ret < 0)
		img_error(ret, "%s", msg);
	return ret;
}

int img_pipe_error(const struct img_pipe_chunk *c)
{
	if (c->ret < 0)
		return img_error(c->ret, "%s", c->msg);
	for (unsigned i = 0; i < c->n_reads; i++)
		if (c->reads[i].ret < 0)
			return img_error(c->reads[i].ret, "%s",
					 c->reads[i].msg);
	return 0;
}
