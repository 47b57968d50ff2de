/* SPDX-License-Identifier: MIT */
/*
 * Tests for the async engine (ring and pool): 1000 random reads, writes, zeroes,
 * discards and flushes on a raw image, submitted in rounds of requests on
 * distinct slots (so their completion order does not matter), checked in the
 * done() callbacks and against a flat reference after every round and after
 * reopening; errors reach done() with req->error set (and come back from
 * img_aio_run); drain and free with requests still queued; cancel takes
 * exactly one owner's queued requests off the queue (done() with -ECANCELED)
 * and leaves the running one and the others, in order; a start() hook that
 * refuses keeps its request from running.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "internal.h"
#include "tap.h"

#define SLOT (32u << 10)
#define NSLOTS 256
#define IMG_SIZE ((uint64_t)SLOT * NSLOTS)
#define PER_ROUND 50

struct treq {
	struct img_aio_req req;
	uint8_t *expect; /* READ: what the slot holds (NULL: unknown) */
	unsigned slot;
};

static uint8_t *ref;
static bool unknown[NSLOTS]; /* discarded: contents unspecified */
static atomic_int done_count, bad_count;
static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void on_done(struct img_aio_req *req, int ret)
{
	struct treq *t = (struct treq *)req;

	if (ret < 0) {
		fprintf(stderr, "request %d at %" PRIu64 " failed: %s\n",
			req->op, req->off, req->error ? req->error : "?");
		atomic_fetch_add(&bad_count, 1);
	} else if (req->op == IMG_AIO_READ && t->expect &&
		   memcmp(req->buf, t->expect, req->len)) {
		fprintf(stderr, "read at %" PRIu64 "+%" PRIu64 " differs\n",
			req->off, req->len);
		atomic_fetch_add(&bad_count, 1);
	}
	atomic_fetch_add(&done_count, 1);
}

static void verify_image(struct img *img, const char *when)
{
	uint8_t *buf = malloc(SLOT);
	unsigned bad = 0;

	for (unsigned s = 0; s < NSLOTS; s++) {
		if (img_read(img, buf, (uint64_t)s * SLOT, SLOT) < 0 ||
		    (!unknown[s] &&
		     memcmp(buf, ref + (uint64_t)s * SLOT, SLOT)))
			bad++;
	}
	if (bad)
		fprintf(stderr, "%u slots differ %s\n", bad, when);
	CHECK_EQ(bad, 0);
	free(buf);
}

static void run_rounds(struct img_aio *aio, struct img *img)
{
	static struct treq reqs[PER_ROUND];
	static uint8_t bufs[PER_ROUND][SLOT];
	static uint8_t expect[PER_ROUND][SLOT];
	unsigned submitted = 0;

	for (unsigned round = 0; round < 1000 / PER_ROUND; round++) {
		bool used[NSLOTS] = { false };

		atomic_store(&done_count, 0);
		for (unsigned i = 0; i < PER_ROUND; i++) {
			struct treq *t = &reqs[i];
			unsigned slot, kind = (unsigned)(rnd() % 10);
			uint64_t off, len;

			do
				slot = (unsigned)(rnd() % NSLOTS);
			while (used[slot]);
			used[slot] = true;
			off = (uint64_t)slot * SLOT + rnd() % 4096;
			len = 1 + rnd() % (SLOT - 4096);
			memset(t, 0, sizeof(*t));
			t->req.off = off;
			t->req.len = len;
			t->req.buf = bufs[i];
			t->req.done = on_done;
			t->slot = slot;
			if (kind < 4) {
				t->req.op = IMG_AIO_WRITE;
				t->req.flags = kind == 0 ? IMG_FUA : 0;
				for (uint64_t j = 0; j < len; j++)
					bufs[i][j] = (uint8_t)rnd();
				memcpy(ref + off, bufs[i], len);
			} else if (kind < 7) {
				t->req.op = IMG_AIO_READ;
				if (!unknown[slot]) {
					memcpy(expect[i], ref + off, len);
					t->expect = expect[i];
				}
			} else if (kind < 8) {
				t->req.op = IMG_AIO_ZERO;
				t->req.flags = rnd() % 2 ? IMG_ZERO_MAY_UNMAP :
							   0;
				memset(ref + off, 0, len);
			} else if (kind < 9) {
				t->req.op = IMG_AIO_DISCARD;
				unknown[slot] = true;
			} else {
				t->req.op = IMG_AIO_FLUSH;
			}
			CHECK_OK(img_aio_submit(aio, img, &t->req));
			submitted++;
		}
		img_aio_drain(aio);
		CHECK_EQ(atomic_load(&done_count), PER_ROUND);
		/* A write after a discard makes only part of the slot known;
		 * refresh the reference from the image for those slots. */
		for (unsigned s = 0; s < NSLOTS; s++) {
			if (!unknown[s])
				continue;
			CHECK_OK(img_read(img, ref + (uint64_t)s * SLOT,
					  (uint64_t)s * SLOT, SLOT));
			unknown[s] = false;
		}
		verify_image(img, "after a round");
	}
	CHECK_EQ(submitted, 1000);
	CHECK_EQ(atomic_load(&bad_count), 0);
}

static atomic_int err_seen;

static void on_err_done(struct img_aio_req *req, int ret)
{
	if (ret == -EINVAL && req->error && strlen(req->error) > 0)
		atomic_fetch_add(&err_seen, 1);
	else
		fprintf(stderr, "bad error completion: %d '%s'\n", ret,
			req->error ? req->error : "(null)");
}

static void test_errors(struct img_aio *aio, struct img *img)
{
	static uint8_t buf[512];
	struct img_aio_req r = {
		.op = IMG_AIO_READ,
		.buf = buf,
		.off = IMG_SIZE,
		.len = sizeof(buf),
		.done = on_err_done,
	};
	struct img_aio_req bad = { .op = 99, .done = on_err_done };

	CHECK_OK(img_aio_submit(aio, img, &r));
	img_aio_drain(aio);
	CHECK_EQ(atomic_load(&err_seen), 1);
	CHECK_ERR(img_aio_submit(aio, img, &bad), -EINVAL);
	/* img_aio_run: the same dispatch, on the calling thread. */
	CHECK_ERR(img_aio_run(img, &r), -EINVAL);
	CHECK_ERR(img_aio_run(img, &bad), -EINVAL);
	bad.op = IMG_AIO_FLUSH;
	CHECK_OK(img_aio_run(img, &bad));
	bad.done = NULL;
	CHECK_ERR(img_aio_submit(aio, img, &bad), -EINVAL);
}

/* free with requests still queued completes them all first. */
static void test_free_queued(struct img *img)
{
	static struct treq reqs[200];
	static uint8_t buf[200][4096];
	struct img_aio *aio;

	atomic_store(&done_count, 0);
	CHECK_OK(img_aio_new(0, &aio));
	for (unsigned i = 0; i < 200; i++) {
		reqs[i] = (struct treq){ .req = {
						 .op = IMG_AIO_READ,
						 .buf = buf[i],
						 .off = (uint64_t)i * 4096,
						 .len = 4096,
						 .done = on_done,
					 } };
		CHECK_OK(img_aio_submit(aio, img, &reqs[i].req));
	}
	img_aio_free(aio);
	CHECK_EQ(atomic_load(&done_count), 200);
	img_aio_free(NULL);
}

static atomic_int gate_in, gate_open, next_seq;

struct creq {
	struct img_aio_req req;
	int ret, seq; /* seq: completion order, 0 = not completed */
	pthread_t thread;
};

static void on_cancel_done(struct img_aio_req *req, int ret)
{
	struct creq *c = (struct creq *)req;

	c->ret = ret;
	c->thread = pthread_self();
	c->seq = atomic_fetch_add(&next_seq, 1) + 1;
}

/* Holds the only pool worker (start() runs there for pool requests)
 * until the test opens the gate. */
static int gate_start(struct img_aio_req *req)
{
	(void)req;
	atomic_store(&gate_in, 1);
	while (!atomic_load(&gate_open))
		usleep(1000);
	return 0;
}

static int refuse_start(struct img_aio_req *req)
{
	(void)req;
	return -ECANCELED;
}

static void test_start_refused(struct img_aio *aio, struct img *img)
{
	struct creq c = { 0 };
	uint8_t *buf = malloc(SLOT);

	if (!buf) {
		CHECK(0);
		return;
	}
	memset(buf, 0xee, SLOT);
	c.req = (struct img_aio_req){ .op = IMG_AIO_READ,
				      .buf = buf,
				      .len = SLOT,
				      .done = on_cancel_done,
				      .start = refuse_start };
	CHECK_OK(img_aio_submit(aio, img, &c.req));
	img_aio_drain(aio);
	CHECK_EQ(c.ret, -ECANCELED);
	CHECK(buf[0] == 0xee && !memcmp(buf, buf + 1, SLOT - 1)); /* not read */
	free(buf);
}

/*
 * Cancel takes one owner's requests off the pool's queue; they complete
 * with -ECANCELED, delivered on the polling thread; the others keep their
 * order. Zeroes always run on the pool; a flush whose start() blocks holds
 * its only worker.
 */
static void test_cancel(struct img *img)
{
	static char a, b; /* two owners */
	struct creq gate = { 0 }, r[12];
	uint8_t *buf = malloc(SLOT);
	struct img_aio *aio;
	int last_a = 0;

	if (!buf || img_aio_new(1, &aio) < 0) {
		CHECK(0);
		free(buf);
		return;
	}
	gate.req = (struct img_aio_req){ .op = IMG_AIO_FLUSH,
					 .done = on_cancel_done,
					 .start = gate_start,
					 .opaque = &a };
	CHECK_OK(img_aio_submit(aio, img, &gate.req));
	while (!atomic_load(&gate_in))
		usleep(1000);
	for (int i = 0; i < 12; i++) {
		r[i] = (struct creq){ .req = { .op = IMG_AIO_ZERO,
					       .off = SLOT * (uint64_t)i,
					       .len = SLOT,
					       .done = on_cancel_done,
					       .opaque = i % 3 ? &b : &a } };
		CHECK_OK(img_aio_submit(aio, img, &r[i].req));
	}
	CHECK_EQ(img_aio_cancel(aio, &b), 8);
	CHECK_EQ(img_aio_cancel(aio, &b), 0);
	for (int i = 0; i < 12; i++)
		CHECK_EQ(r[i].seq, 0); /* nothing delivered before a poll */
	CHECK_EQ(img_aio_poll(aio), 8);
	for (int i = 0; i < 12; i++)
		if (i % 3) {
			CHECK_EQ(r[i].ret, -ECANCELED);
			CHECK(r[i].seq &&
			      pthread_equal(r[i].thread, pthread_self()));
		} else {
			CHECK_EQ(r[i].seq, 0); /* still queued */
		}
	CHECK_EQ(img_aio_inflight(aio), 5);
	atomic_store(&gate_open, 1);
	img_aio_drain(aio);
	CHECK_EQ(gate.ret, 0);
	CHECK(gate.seq > 0);
	for (int i = 0; i < 12; i += 3) {
		CHECK_EQ(r[i].ret, 0);
		CHECK(r[i].seq > last_a); /* FIFO order kept */
		last_a = r[i].seq;
	}
	CHECK_EQ(img_aio_inflight(aio), 0);
	test_start_refused(aio, img);
	img_aio_free(aio);
	free(buf);
}

int main(void)
{
	const char *path = test_path("aio.raw");
	struct img_create_opts copts = { .format = "raw", .size = IMG_SIZE };
	struct img_open_opts oopts = { .format = "raw" };
	struct img_aio *aio;
	struct img *img;

	ref = calloc(1, IMG_SIZE);
	if (img_create(path, &copts) < 0 || img_open(path, &oopts, &img) < 0) {
		fprintf(stderr, "cannot create a raw image: %s\n",
			img_last_error());
		return 1;
	}
	CHECK_OK(img_aio_new(4, &aio));
	run_rounds(aio, img);
	test_errors(aio, img);
	img_aio_free(aio);
	CHECK_OK(img_close(img));

	/* Everything written is there after reopening. */
	if (img_open(path, &oopts, &img) >= 0) {
		verify_image(img, "after reopen");
		img_close(img);
	} else {
		CHECK(0);
	}
	if (img_open(path, &oopts, &img) >= 0) {
		test_free_queued(img);
		test_cancel(img);
		img_close(img);
	}
	free(ref);
	return test_done();
}
