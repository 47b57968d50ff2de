/* SPDX-License-Identifier: MIT */
/*
 * The async engine's ring against a model, on a qcow2 image with 4 KiB
 * clusters in a host file (io_uring backend where the machine has it; the
 * pool stands in where it does not, and the test says which ran).
 * - Allocation races: each round discards three neighbouring clusters and
 *   then puts 16-48 writes of distinct sector runs in them in flight at
 *   once from one engine, so several requests allocate the same cluster
 *   and its neighbours together, while reads of settled data elsewhere go
 *   on the ring and are checked in done(). The region must then read back
 *   as the model says.
 * - Overwrites: rounds of non-overlapping writes and reads all over the
 *   (allocated) image, the writes straight on the ring.
 * - Cancel and close with requests in flight: one owner's zeroes queued for
 *   the pool are cancelled while ring reads run; cancelled ones complete
 *   with -ECANCELED and change nothing, the rest complete normally, and
 *   img_aio_free() with everything still in flight delivers every done().
 * At the end the image is checked with qemu-img check and compared with
 * the model by qemu-img compare.
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define CS 4096u
#define IMG_SIZE (4u << 20)
#define NCLUSTERS (IMG_SIZE / CS)
#define MAX_REQS 64
#define ROUNDS 150

static uint8_t ref[IMG_SIZE];

struct treq {
	struct img_aio_req req;
	uint8_t buf[3 * CS];
	const uint8_t *expect; /* READ: what it must return */
	int ret;
	bool done;
};

static struct treq reqs[MAX_REQS];
static atomic_int bad_reads, done_count;

static void on_done(struct img_aio_req *req, int ret)
{
	struct treq *t = (struct treq *)req;

	if (t->done)
		atomic_fetch_add(&bad_reads, 1000); /* done() twice */
	t->done = true;
	t->ret = ret;
	atomic_fetch_add(&done_count, 1);
	if (ret < 0 && ret != -ECANCELED)
		printf("# request at %" PRIu64 " failed: %s\n", req->off,
		       req->error ? req->error : "?");
	if (req->op == IMG_AIO_READ && ret == 0 &&
	    memcmp(t->buf, t->expect, req->len)) {
		printf("# read at %" PRIu64 " returned wrong data\n", req->off);
		atomic_fetch_add(&bad_reads, 1);
	}
}

static void submit_as(struct img_aio *aio, struct img *img, struct treq *t,
		      enum img_aio_op op, uint64_t off, uint64_t len,
		      void *opaque)
{
	t->req = (struct img_aio_req){ .op = op,
				       .buf = t->buf,
				       .off = off,
				       .len = len,
				       .done = on_done,
				       .opaque = opaque };
	t->done = false;
	t->ret = 1;
	CHECK_OK(img_aio_submit(aio, img, &t->req));
}

static void submit(struct img_aio *aio, struct img *img, struct treq *t,
		   enum img_aio_op op, uint64_t off, uint64_t len)
{
	submit_as(aio, img, t, op, off, len, NULL);
}

/* All requests of the round done, and every one succeeded. */
static void finish_round(struct img_aio *aio, int n)
{
	img_aio_drain(aio);
	for (int i = 0; i < n; i++)
		if (!reqs[i].done || reqs[i].ret != 0) {
			CHECK(reqs[i].done && reqs[i].ret == 0);
			break;
		}
}

/* A read of a settled cluster outside [lo, hi), checked in done(). */
static void submit_read_outside(struct img_aio *aio, struct img *img,
				struct qt_rng *r, struct treq *t, uint64_t lo,
				uint64_t hi)
{
	uint64_t off;

	do
		off = qt_below(r, NCLUSTERS) * CS;
	while (off + CS > lo && off < hi);
	t->expect = ref + off;
	submit(aio, img, t, IMG_AIO_READ, off, CS);
}

static void allocation_races(struct img_aio *aio, struct img *img,
			     struct qt_rng *r)
{
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t base = qt_below(r, NCLUSTERS - 2) * CS;
		uint64_t sectors = 3 * CS / 512, s = 0;
		int n = 0;

		/* Unallocated again (a hole in an otherwise full image). */
		CHECK_OK(img_discard(img, base, 3 * CS));
		memset(ref + base, 0, 3 * CS);
		while (s < sectors && n < MAX_REQS - 8) {
			uint64_t k = 1 + qt_below(r, 4);
			struct treq *t = &reqs[n++];

			if (k > sectors - s)
				k = sectors - s;
			qt_fill(r, t->buf, k * 512);
			memcpy(ref + base + s * 512, t->buf, k * 512);
			submit(aio, img, t, IMG_AIO_WRITE, base + s * 512,
			       k * 512);
			s += k;
		}
		for (int i = 0; i < 8; i++)
			submit_read_outside(aio, img, r, &reqs[n++], base,
					    base + 3 * CS);
		finish_round(aio, n);
		if (!qt_compare(img, ref, base, 3 * CS, "allocation race"))
			return;
	}
}

static void overwrites(struct img_aio *aio, struct img *img, struct qt_rng *r)
{
	for (int round = 0; round < ROUNDS; round++) {
		bool used[NCLUSTERS] = { false };
		int n = 0;

		while (n < MAX_REQS) {
			uint64_t c = qt_below(r, NCLUSTERS);
			struct treq *t = &reqs[n];

			if (used[c])
				continue;
			used[c] = true;
			n++;
			if (qt_below(r, 2)) {
				qt_fill(r, t->buf, CS);
				memcpy(ref + c * CS, t->buf, CS);
				submit(aio, img, t, IMG_AIO_WRITE, c * CS, CS);
			} else {
				t->expect = ref + c * CS;
				submit(aio, img, t, IMG_AIO_READ, c * CS, CS);
			}
		}
		finish_round(aio, n);
	}
	CHECK(qt_compare(img, ref, 0, IMG_SIZE, "after the overwrites"));
}

static void cancel_and_close(struct img *img)
{
	static char owner;
	struct img_aio *aio;
	int cancelled, n = 0, zeroes = 0;

	CHECK_OK(img_aio_new(1, &aio));
	atomic_store(&done_count, 0);
	for (int i = 0; i < MAX_REQS; i++) {
		struct treq *t = &reqs[n++];
		uint64_t c = (uint64_t)i * 2;

		if (i % 4 == 0) {
			submit_as(aio, img, t, IMG_AIO_ZERO, c * CS, CS,
				  &owner);
			zeroes++;
		} else {
			t->expect = ref + c * CS;
			submit(aio, img, t, IMG_AIO_READ, c * CS, CS);
		}
	}
	cancelled = img_aio_cancel(aio, &owner);
	CHECK(cancelled >= 0 && cancelled <= zeroes);
	test_note("%d of %d queued zeroes cancelled", cancelled, zeroes);
	img_aio_free(aio); /* everything else still in flight */
	CHECK_EQ(atomic_load(&done_count), n);
	for (int i = 0; i < n; i++) {
		struct treq *t = &reqs[i];
		uint64_t off = t->req.off;

		CHECK(t->done);
		if (t->req.op != IMG_AIO_ZERO) {
			CHECK_EQ(t->ret, 0);
			continue;
		}
		CHECK(t->ret == 0 || t->ret == -ECANCELED);
		if (t->ret == 0)
			memset(ref + off, 0, CS);
		if (t->ret == -ECANCELED)
			cancelled--;
	}
	CHECK_EQ(cancelled, 0);
	CHECK(qt_compare(img, ref, 0, IMG_SIZE, "after cancel and close"));
}

int main(void)
{
	struct img_create_opts co = { .format = "qcow2", .size = IMG_SIZE };
	struct img_kv kv = { .key = "cluster_size", .value = "4096" };
	const char *path, *ref_path;
	struct qt_rng r = { qt_seed(20261207) };
	struct img_aio *aio;
	struct img *img;
	int fd;

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver");
	path = test_path("ring.qcow2");
	ref_path = test_path("ring.raw");
	co.opts = &kv;
	co.n_opts = 1;
	CHECK_OK(img_create(path, &co));
	CHECK_OK(img_open(path, &(struct img_open_opts){ .format = "qcow2" },
			  &img));
	qt_fill(&r, ref, IMG_SIZE);
	CHECK_OK(img_write(img, ref, 0, IMG_SIZE, 0));

	CHECK_OK(img_aio_new(2, &aio));
	test_note("engine %s", img_aio_uses_ring(aio) ?
				       "with an io_uring ring" :
				       "without a ring (psync pool only)");
	allocation_races(aio, img, &r);
	overwrites(aio, img, &r);
	img_aio_free(aio);
	cancel_and_close(img);
	CHECK_EQ(atomic_load(&bad_reads), 0);
	CHECK_OK(img_close(img));

	fd = open(ref_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && pwrite(fd, ref, IMG_SIZE, 0) == (ssize_t)IMG_SIZE);
	if (fd >= 0)
		close(fd);
	if (!qt_have_qemu_img()) {
		test_note("qemu-img not installed: external checks skipped");
		return test_done();
	}
	fflush(stdout);
	CHECK_EQ(qt_qemu_check(path), 0);
	CHECK_EQ(test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'",
			 ref_path, path),
		 0);
	return test_done();
}
