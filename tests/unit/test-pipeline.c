/* SPDX-License-Identifier: MIT */
/*
 * Tests for the pipelined read loop (lib/pipeline.c) on a raw image whose
 * file is a "gated" in-memory backend: reads of the first chunk are held
 * until every later read has completed, so completions come back to front,
 * and chosen reads fail. The consumer must still see the chunks in the
 * order they were made, each with its own data and result; a producer
 * error must wait for the chunks made before it; a consumer that stops
 * ends the run with its value.
 */
#include <pthread.h>
#include <time.h>

#include "internal.h"
#include "tap.h"

#define CH 4096u
#define NCH 12u
#define SIZE (CH * NCH)

/* The gated file: a mem file behind a pread that can hold or fail. */
struct gate {
	struct img_io io;
	struct img_io *mem;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned later_done; /* reads past the first chunk completed */
	bool hold_first; /* hold reads of chunk 0 until the rest is done */
	bool held_ok; /* chunk 0 did wait for all the rest */
	uint64_t bad_mask; /* chunks whose reads fail with -EIO */
};

static struct gate *to_gate(struct img_io *io)
{
	return (struct gate *)io;
}

static int gate_pread(struct img_io *io, void *buf, uint64_t len,
		      uint64_t file_off)
{
	struct gate *g = to_gate(io);
	unsigned idx = (unsigned)(file_off / CH);
	int ret;

	pthread_mutex_lock(&g->lock);
	if (idx == 0 && g->hold_first) {
		struct timespec dl;
		int r = 0;

		/* Bounded: an engine with a single worker would never run
		 * the later reads while this one waits. */
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 10;
		while (g->later_done < NCH - 1 && r == 0)
			r = pthread_cond_timedwait(&g->cond, &g->lock, &dl);
		g->held_ok = g->later_done == NCH - 1;
	}
	pthread_mutex_unlock(&g->lock);
	if (idx < 64 && (g->bad_mask >> idx) & 1)
		ret = img_error(-EIO, "gate: read of chunk %u fails", idx);
	else
		ret = img_io_pread(g->mem, buf, len, file_off);
	pthread_mutex_lock(&g->lock);
	if (idx > 0)
		g->later_done++;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	return ret;
}

static int gate_get_size(struct img_io *io, uint64_t *size)
{
	return img_io_size(to_gate(io)->mem, size);
}

static void gate_close(struct img_io *io)
{
	struct gate *g = to_gate(io);

	img_io_close(g->mem);
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
	free(g);
}

static const struct img_io_ops gate_ops = {
	.name = "gate",
	.pread = gate_pread,
	.get_size = gate_get_size,
	.close = gate_close,
};

static uint8_t data[SIZE];

static struct img *open_gated(struct gate **out)
{
	struct img_open_opts o = { .format = "raw", .flags = IMG_OPEN_RDONLY };
	struct gate *g = calloc(1, sizeof(*g));
	struct img *img;

	if (!g || img_io_mem_new(data, sizeof(data), &g->mem) < 0)
		abort();
	g->io.ops = &gate_ops;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	*out = g;
	if (img_open_io(&g->io, "gate.raw", &o, &img) < 0) {
		fprintf(stderr, "open: %s\n", img_last_error());
		abort();
	}
	return img;
}

struct run {
	struct img *img;
	unsigned made, seen;
	unsigned fail_next_at; /* next() fails making this chunk (0: never) */
	unsigned stop_at; /* consume() stops at this chunk (0: never) */
	unsigned order[NCH + 1];
	int rets[NCH + 1];
	bool data_ok;
};

static int run_next(void *opaque, struct img_pipe_chunk *c)
{
	struct run *r = opaque;

	if (r->made == NCH)
		return 0;
	c->kind = r->made++;
	if (r->fail_next_at && c->kind == r->fail_next_at)
		return img_error(-ENOSPC, "producer fails at %u", c->kind);
	c->off = (uint64_t)c->kind * CH;
	c->len = CH;
	c->n_reads = 1;
	c->reads[0] = (struct img_pipe_read){ .img = r->img,
					      .off = c->off,
					      .len = CH };
	return 1;
}

static int run_consume(void *opaque, struct img_pipe_chunk *c)
{
	struct run *r = opaque;

	r->order[r->seen] = c->kind;
	r->rets[r->seen] = img_pipe_error(c);
	if (!r->rets[r->seen] && memcmp(c->reads[0].buf, data + c->off, c->len))
		r->data_ok = false;
	r->seen++;
	if (r->stop_at && c->kind == r->stop_at)
		return 7;
	return 0;
}

static const struct img_pipe_ops run_ops = {
	.next = run_next,
	.consume = run_consume,
};

static bool in_order(const struct run *r)
{
	for (unsigned i = 0; i < r->seen; i++)
		if (r->order[i] != i)
			return false;
	return true;
}

/* Chunk 0 completes last; it is still consumed first. */
static void test_order(void)
{
	struct gate *g;
	struct img *img = open_gated(&g);
	struct run r = { .img = img, .data_ok = true };

	g->hold_first = true;
	CHECK_EQ(img_pipe_run(&run_ops, &r, CH, NCH), 0);
	CHECK(g->held_ok); /* the reads really completed back to front */
	CHECK_EQ(r.seen, NCH);
	CHECK(in_order(&r));
	CHECK(r.data_ok);
	img_close(img);
}

/* Two reads fail; the earlier chunk's failure is the first one seen, even
 * though the later one completed first, with its own message. */
static void test_read_errors(void)
{
	struct gate *g;
	struct img *img = open_gated(&g);
	struct run r = { .img = img, .data_ok = true };

	g->hold_first = true;
	g->bad_mask = (1u << 0) | (1u << 5);
	CHECK_EQ(img_pipe_run(&run_ops, &r, CH, NCH), 0);
	CHECK(g->held_ok);
	CHECK(in_order(&r));
	CHECK_EQ(r.rets[0], -EIO);
	CHECK_EQ(r.rets[5], -EIO);
	CHECK_EQ(r.rets[1], 0);
	CHECK(r.data_ok);
	img_close(img);

	/* A consumer stopping at the first failed chunk returns its value,
	 * and the later failure is never seen. */
	img = open_gated(&g);
	r = (struct run){ .img = img, .data_ok = true, .stop_at = 2 };
	g->bad_mask = 1u << 2 | 1u << 9;
	CHECK_EQ(img_pipe_run(&run_ops, &r, CH, 4), 7);
	CHECK_EQ(r.seen, 3);
	CHECK_EQ(r.rets[2], -EIO);
	img_close(img);
}

/* A producer error comes after the chunks made before it, with its
 * message, and ends the run; a consumer stopping earlier hides it. */
static void test_producer_error(void)
{
	struct gate *g;
	struct img *img = open_gated(&g);
	struct run r = { .img = img, .data_ok = true, .fail_next_at = 6 };
	struct img_pipe_chunk c = { 0 };

	CHECK_EQ(img_pipe_run(&run_ops, &r, CH, 3), 0);
	CHECK_EQ(r.seen, 7);
	CHECK(in_order(&r));
	CHECK_EQ(r.rets[6], -ENOSPC);
	CHECK(r.data_ok);
	img_close(img);

	img = open_gated(&g);
	r = (struct run){
		.img = img, .data_ok = true, .fail_next_at = 6, .stop_at = 4
	};
	CHECK_EQ(img_pipe_run(&run_ops, &r, CH, NCH), 7);
	CHECK_EQ(r.seen, 5);
	img_close(img);

	c.ret = -ENOSPC;
	snprintf(c.msg, sizeof(c.msg), "made here");
	CHECK_EQ(img_pipe_error(&c), -ENOSPC);
	CHECK_STR_HAS(img_last_error(), "made here");
}

/* A read longer than the buffers is the caller's bug: -EINVAL. */
static void test_bad_chunk(void)
{
	struct gate *g;
	struct img *img = open_gated(&g);
	struct run r = { .img = img, .data_ok = true };

	CHECK_ERR(img_pipe_run(&run_ops, &r, CH / 2, 2), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "pipeline: read of 4096 bytes");
	CHECK_EQ(r.seen, 0);
	CHECK_ERR(img_pipe_run(&run_ops, &r, 0, 2), -EINVAL);
	img_close(img);
}

int main(void)
{
	for (unsigned i = 0; i < SIZE; i++)
		data[i] = (uint8_t)(i * 7 + i / CH);
	test_order();
	test_read_errors();
	test_producer_error();
	test_bad_chunk();
	return test_done();
}
