/* SPDX-License-Identifier: MIT */
/*
 * Cancellation, drain, free and close of the async engine with hundreds of
 * requests in flight, on a qcow2 image whose writes allocate and on a raw
 * image. What lib/img.h promises and this test holds it to:
 * - every request's done() runs exactly once, on the polling thread, with 0
 *   or, for a request of the cancelled owner only, -ECANCELED; as many
 *   -ECANCELED as img_aio_cancel() returned; start() at most once, and
 *   exactly once for a request that completed (on a1ce951 a cancelled one
 *   may have had it: a request mapped for the ring that found the ring full
 *   gets start() on the submitting thread, then waits in the pool's queue);
 * - a cancelled request never ran: a cancelled write or zero left its range
 *   as it was, byte for byte; a completed one wrote all of it (requests of
 *   a round never share a byte, so the model is exact);
 * - img_aio_drain() and img_aio_free() deliver everything, also requests
 *   that done() callbacks submit meanwhile;
 * - with the only pool worker held, img_aio_cancel() takes every queued
 *   request of its owner (everything without a ring; zeroes and qcow2
 *   allocating writes with one) and none of another owner's;
 * - an image closes after its engine went idle, and the engine then serves
 *   another image.
 * Modes, each on a fresh image: cancel racing the workers then drain; then
 * free at once; cancel from inside a done() callback; cancel behind a held
 * worker. Each image is then checked against the model, by qemu-img check
 * (no leaks: closed cleanly) and qemu-img compare. ASan checks that nothing
 * leaks; the seed is printed (IMG_TEST_SEED).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define SLOT 65536u
#define NSLOTS 256u
#define IMG_SIZE ((uint64_t)SLOT * NSLOTS)
#define NREQS 240
#define POOL_BYTES (1u << 20)

enum mode { M_DRAIN, M_FREE, M_CANCEL_IN_DONE, M_GATED, M_COUNT };
static const char *const mode_names[M_COUNT] = {
	"cancel+drain", "cancel+free", "cancel in done()",
	"cancel behind a held worker"
};

struct treq {
	struct img_aio_req req;
	atomic_int ndone, nstart;
	int ret;
	pthread_t thread;
	bool pool_only; /* certain to wait in the pool's queue (M_GATED) */
	uint8_t *expect; /* READ: the model's bytes */
	struct treq *follow; /* a read that done() submits, or NULL */
};

static char owner_a, owner_b;
static uint8_t model[IMG_SIZE];
static uint8_t pool[POOL_BYTES + SLOT]; /* write data */
static struct treq reqs[NREQS], follows[NREQS];
static bool ever_written[NSLOTS]; /* qcow2: the cluster may be allocated */
static struct img_aio *cur_aio;
static struct img *cur_img;
static atomic_int bad, cancelled_in_done, gate_open, gate_in;
static pthread_t main_thread;

static int on_start(struct img_aio_req *req)
{
	atomic_fetch_add(&((struct treq *)req)->nstart, 1);
	return 0;
}

static void on_done(struct img_aio_req *req, int ret)
{
	struct treq *t = (struct treq *)req;

	if (atomic_fetch_add(&t->ndone, 1))
		return; /* counted as a failure later */
	t->ret = ret;
	t->thread = pthread_self();
	if (ret < 0 && ret != -ECANCELED) {
		printf("# op %d at %#" PRIx64 "+%" PRIu64 " failed: %s\n",
		       req->op, req->off, req->len,
		       req->error ? req->error : "?");
		atomic_fetch_add(&bad, 1);
	}
	if (ret == 0 && req->op == IMG_AIO_READ &&
	    memcmp(req->buf, t->expect, req->len)) {
		printf("# read at %#" PRIx64 "+%" PRIu64 " returned wrong "
		       "data\n",
		       req->off, req->len);
		atomic_fetch_add(&bad, 1);
	}
	/* Chained: read back what this write just stored. */
	if (ret == 0 && t->follow &&
	    img_aio_submit(cur_aio, cur_img, &t->follow->req) < 0)
		atomic_fetch_add(&bad, 1);
}

/* The first completion cancels owner a's requests still queued. */
static void on_done_cancel(struct img_aio_req *req, int ret)
{
	atomic_fetch_add(&cancelled_in_done, img_aio_cancel(cur_aio, &owner_a));
	on_done(req, ret);
}

/* Holds the engine's only pool worker until the test opens the gate. */
static int gate_start(struct img_aio_req *req)
{
	on_start(req);
	atomic_store(&gate_in, 1);
	while (!atomic_load(&gate_open))
		usleep(500);
	return 0;
}

static void prep(struct treq *t, enum img_aio_op op, uint64_t off, uint64_t len,
		 void *buf, void *opaque)
{
	memset(t, 0, sizeof(*t));
	t->req = (struct img_aio_req){ .op = op,
				       .buf = buf,
				       .off = off,
				       .len = len,
				       .done = on_done,
				       .start = on_start,
				       .opaque = opaque };
	t->ret = 1;
}

/* Fill reqs[] for one round: distinct slots, writes and zeroes of both
 * owners (about half of them a's), reads, flushes. */
static void make_round(struct qt_rng *r, bool qcow2, bool ring)
{
	unsigned perm[NSLOTS];

	for (unsigned i = 0; i < NSLOTS; i++)
		perm[i] = i;
	for (unsigned i = NSLOTS - 1; i > 0; i--) {
		unsigned j = (unsigned)qt_below(r, i + 1), x = perm[i];

		perm[i] = perm[j];
		perm[j] = x;
	}
	for (unsigned i = 0; i < NREQS; i++) {
		struct treq *t = &reqs[i];
		unsigned slot = perm[i], k = (unsigned)qt_below(r, 20);
		uint64_t len = 1 + qt_below(r, SLOT);
		uint64_t off =
			(uint64_t)slot * SLOT + qt_below(r, SLOT - len + 1);
		void *owner = qt_below(r, 2) ? &owner_a : &owner_b;

		if (k < 11) {
			prep(t, IMG_AIO_WRITE, off, len,
			     pool + qt_below(r, POOL_BYTES), owner);
			t->pool_only = !ring || (qcow2 && !ever_written[slot]);
		} else if (k < 14) {
			prep(t, IMG_AIO_ZERO, off, len, NULL, owner);
			t->req.flags = qt_below(r, 2) ? IMG_ZERO_MAY_UNMAP : 0;
			t->pool_only = true;
		} else if (k < 19) {
			prep(t, IMG_AIO_READ, off, len, malloc(len), owner);
			t->expect = model + off;
			t->pool_only = !ring;
		} else {
			prep(t, IMG_AIO_FLUSH, 0, 0, NULL, &owner_b);
			t->pool_only = true;
		}
		if (t->req.op == IMG_AIO_WRITE && qt_below(r, 4) == 0) {
			t->follow = &follows[i];
			prep(t->follow, IMG_AIO_READ, off, len, malloc(len),
			     &owner_b);
			t->follow->expect = t->req.buf;
		}
	}
}

/* After the round: every request (and chained read) done once, as the
 * promises say; the model takes what completed. */
static void settle(int ncancelled, const char *what)
{
	int seen_cancelled = 0, errors = 0;

	for (unsigned i = 0; i < NREQS; i++) {
		struct treq *t = &reqs[i];
		int nd = atomic_load(&t->ndone), ns = atomic_load(&t->nstart);
		int fd = t->follow ? atomic_load(&t->follow->ndone) : -1;
		bool ok = nd == 1 && ns <= 1 &&
			  pthread_equal(t->thread, main_thread);

		if (t->ret == -ECANCELED) {
			seen_cancelled++;
			ok &= t->req.opaque == &owner_a;
		} else {
			ok &= t->ret == 0 && ns == 1;
		}
		if (t->follow) {
			struct treq *f = t->follow;
			int want = t->ret == 0 ? 1 : 0;

			ok &= fd == want && (!want || f->ret == 0);
			free(f->req.buf);
		}
		if (!ok && errors++ < 5)
			printf("# %s: request %u (op %d, owner %s): done %d "
			       "times, start %d times, ret %d, its chained "
			       "read done %d times\n",
			       what, i, t->req.op,
			       t->req.opaque == &owner_a ? "a" : "b", nd, ns,
			       t->ret, fd);
		if (t->ret == 0 && t->req.op == IMG_AIO_WRITE) {
			memcpy(model + t->req.off, t->req.buf, t->req.len);
			ever_written[t->req.off / SLOT] = true;
		} else if (t->ret == 0 && t->req.op == IMG_AIO_ZERO) {
			/* A zero may allocate too. */
			memset(model + t->req.off, 0, t->req.len);
			ever_written[t->req.off / SLOT] = true;
		}
		if (t->req.op == IMG_AIO_READ)
			free(t->req.buf);
	}
	CHECK_EQ(errors, 0);
	CHECK_EQ(seen_cancelled, ncancelled);
	test_note("%s: %d of %d requests cancelled", what, seen_cancelled,
		  NREQS);
}

static void submit_all(struct img_aio *aio, struct img *img)
{
	for (unsigned i = 0; i < NREQS; i++)
		CHECK_OK(img_aio_submit(aio, img, &reqs[i].req));
}

static void run_mode(struct img *img, enum mode m, struct qt_rng *r, bool qcow2,
		     const char *name)
{
	char what[128];
	struct img_aio *aio;
	struct treq gate;
	int n = 0;

	snprintf(what, sizeof(what), "%s, %s", name, mode_names[m]);
	if (img_aio_new(m == M_GATED ? 1 : 2, &aio) < 0) {
		CHECK(0);
		return;
	}
	cur_aio = aio;
	cur_img = img;
	make_round(r, qcow2, img_aio_uses_ring(aio));
	switch (m) {
	case M_DRAIN:
	case M_FREE:
		submit_all(aio, img);
		n = img_aio_cancel(aio, &owner_a);
		CHECK(n >= 0);
		CHECK_EQ(img_aio_cancel(aio, &owner_a), 0);
		if (m == M_DRAIN) {
			img_aio_drain(aio);
			CHECK_EQ(img_aio_inflight(aio), 0);
		}
		break;
	case M_CANCEL_IN_DONE:
		atomic_store(&cancelled_in_done, 0);
		for (unsigned i = 0; i < NREQS; i++)
			reqs[i].req.done = on_done_cancel;
		submit_all(aio, img);
		img_aio_drain(aio);
		n = atomic_load(&cancelled_in_done);
		break;
	case M_GATED: {
		int want = 0, got = 0;

		prep(&gate, IMG_AIO_FLUSH, 0, 0, NULL, &owner_b);
		gate.req.start = gate_start;
		atomic_store(&gate_open, 0);
		atomic_store(&gate_in, 0);
		CHECK_OK(img_aio_submit(aio, img, &gate.req));
		while (!atomic_load(&gate_in))
			usleep(500);
		submit_all(aio, img);
		n = img_aio_cancel(aio, &owner_a);
		for (unsigned i = 0; i < NREQS; i++)
			want += reqs[i].pool_only &&
				reqs[i].req.opaque == &owner_a;
		/* Delivered by polling only, and all of them by one poll
		 * (ring completions may come along). */
		for (unsigned i = 0; i < NREQS; i++)
			CHECK_EQ(atomic_load(&reqs[i].ndone), 0);
		CHECK(img_aio_poll(aio) >= n);
		for (unsigned i = 0; i < NREQS; i++) {
			struct treq *t = &reqs[i];

			if (t->pool_only && t->req.opaque == &owner_a) {
				got += t->ret == -ECANCELED;
				CHECK_EQ(atomic_load(&t->nstart), 0);
			}
		}
		CHECK(n >= want);
		CHECK_EQ(got, want);
		atomic_store(&gate_open, 1);
		break;
	}
	default:
		break;
	}
	/* Free with whatever is still in flight. */
	img_aio_free(aio);
	if (m == M_GATED)
		CHECK(atomic_load(&gate.ndone) == 1 && gate.ret == 0);
	settle(n, what);
}

/* Close an image whose engine went idle; the engine then serves another. */
static void close_then_reuse(const char *path, const char *fmt,
			     const char *other)
{
	struct img_open_opts o = { .format = fmt };
	struct img *img, *img2;
	struct img_aio *aio;
	struct treq t;
	static uint8_t buf[4096];

	if (img_open(path, &o, &img) < 0 || img_aio_new(2, &aio) < 0) {
		CHECK(0);
		return;
	}
	cur_aio = aio;
	prep(&t, IMG_AIO_WRITE, 12345, sizeof(buf), pool + 777, NULL);
	CHECK_OK(img_aio_submit(aio, img, &t.req));
	img_aio_drain(aio);
	CHECK(t.ret == 0 && atomic_load(&t.ndone) == 1);
	if (t.ret == 0)
		memcpy(model + 12345, pool + 777, sizeof(buf));
	CHECK_OK(img_close(img)); /* the engine stays, idle */
	if (img_open(other, &(struct img_open_opts){ .format = "raw" }, &img2) <
	    0) {
		CHECK(0);
		img_aio_free(aio);
		return;
	}
	prep(&t, IMG_AIO_READ, 0, sizeof(buf), buf, NULL);
	t.expect = pool;
	CHECK_OK(img_aio_submit(aio, img2, &t.req));
	img_aio_drain(aio);
	CHECK(t.ret == 0 && atomic_load(&t.ndone) == 1);
	img_aio_free(aio);
	CHECK_OK(img_close(img2));
}

/* One mode on a fresh image of format fmt (a fresh qcow2 allocates on
 * every write), then the image against the model, closed, by qemu-img. */
static void run_image(const char *fmt, enum mode m, struct qt_rng *r)
{
	struct img_create_opts co = { .format = fmt, .size = IMG_SIZE };
	struct img_open_opts o = { .format = fmt };
	bool qcow2 = !strcmp(fmt, "qcow2");
	char name[64];
	const char *path, *ref, *other;
	struct img *img;

	snprintf(name, sizeof(name), "close-%d.%s", (int)m, fmt);
	path = test_path(name);
	snprintf(name, sizeof(name), "close-%d-%s-model.raw", (int)m, fmt);
	ref = test_path(name);
	other = test_path("other.raw");
	memset(model, 0, sizeof(model));
	memset(ever_written, 0, sizeof(ever_written));
	CHECK_OK(img_create(path, &co));
	if (img_open(path, &o, &img) < 0) {
		CHECK(0);
		return;
	}
	run_mode(img, m, r, qcow2, fmt);
	CHECK(qt_compare(img, model, 0, IMG_SIZE, fmt));
	CHECK_OK(img_close(img));
	if (m == M_COUNT - 1) {
		CHECK_OK(qt_write_file(other, pool, SLOT));
		close_then_reuse(path, fmt, other);
	}
	CHECK_OK(qt_write_file(ref, model, IMG_SIZE));
	if (!qt_have_qemu_img())
		return;
	fflush(stdout);
	if (qcow2)
		CHECK_EQ(qt_qemu_check(path), 0);
	CHECK_EQ(test_sh("qemu-img compare -q -f raw -F %s '%s' '%s'", fmt, ref,
			 path),
		 0);
}

static void run_format(const char *fmt, struct qt_rng *r)
{
	for (int m = 0; m < M_COUNT; m++)
		run_image(fmt, (enum mode)m, r);
}

int main(void)
{
	struct qt_rng r = { qt_seed(20261209) };

	main_thread = pthread_self();
	qt_fill(&r, pool, sizeof(pool));
	run_format("raw", &r);
	if (qt_have_qcow2())
		run_format("qcow2", &r);
	else
		test_note("no qcow2 driver: only raw ran");
	if (!qt_have_qemu_img())
		test_note("qemu-img not installed: external checks skipped");
	return test_done();
}
