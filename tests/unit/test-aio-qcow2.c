/* SPDX-License-Identifier: MIT */
/*
 * Concurrency of the qcow2 fast path (qcow2_map_direct: data of allocated
 * clusters moves without the image lock): 16 aio workers run thousands of
 * random writes, reads, zeroes, discards and flushes on a 4 KiB-cluster
 * image in a host file, whose writes a wrapper backend delays at random
 * (the write of a racing pair always) so that transfers made outside the
 * lock overlap metadata changes; its flush returns at once, so freed
 * clusters get reused quickly. Without the wait in qcow2_refcount_update
 * this test fails on every seed tried. In-flight
 * requests never share a byte (adjacent ones share clusters), except racing
 * pairs: a whole-cluster write and a discard of that cluster, submitted
 * together, after which the cluster must hold all of the write or all
 * zeroes. If a freed cluster were reused while a stale transfer to it still
 * ran, another range would end up with the wrong data. Every read is
 * checked in done(); at the end the whole image against a flat reference,
 * then qemu-img check and qemu-img compare on the closed file.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define CS 4096u
#define IMG_SIZE (4u << 20)
#define SECTORS (IMG_SIZE / 512)
#define MAX_INFLIGHT 48
#define N_OPS 12000
#define MAX_LEN (3 * CS)

/* ---- a backend that delays writes ---- */

/* qt_io_borrow's ops, and a copy with delaying writes (see open_slow). */
static struct img_io_ops base_ops, slow_ops;
static atomic_uint jitter_seq;

static bool is_pair_write(const void *buf);

/*
 * Sleep 0-1 ms on about every fourth call, and 3 ms when the data is that
 * of the write half of a racing pair: long enough for the discard, a flush
 * and the reuse of a freed cluster to happen meanwhile if nothing held them.
 */
static void jitter(const void *buf)
{
	unsigned n = atomic_fetch_add(&jitter_seq, 1);
	uint64_t h = (n + 1) * 0x9e3779b97f4a7c15ull;
	struct timespec ts = { 0, (long)((h >> 20) % 1000) * 1000 };

	if (is_pair_write(buf))
		ts.tv_nsec = 3000000;
	else if ((h >> 60) >= 4)
		return;
	nanosleep(&ts, NULL);
}

static int s_pwrite(struct img_io *io, const void *buf, uint64_t len,
		    uint64_t off)
{
	jitter(buf);
	return base_ops.pwrite(io, buf, len, off);
}

static int s_submit(struct img_io *io, struct img_io_vec *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (v[i].write) {
			jitter(v[i].buf);
			break;
		}
	return base_ops.submit(io, v, n);
}

/* Durability does not matter here; a quick flush lets freed clusters be
 * reused sooner. */
static int s_flush(struct img_io *io)
{
	(void)io;
	return 0;
}

/* Open path as qcow2 through the delaying wrapper; *file is the host file
 * backend, which the caller closes after the image. */
static int open_slow(const char *path, struct img_io **file, struct img **out)
{
	struct img_open_opts o = { .format = "qcow2" };
	struct img_io *b;
	int ret;

	ret = img_io_open(path, 0, IMG_IO_AUTO, file);
	if (ret < 0)
		return ret;
	ret = qt_io_borrow(*file, &b);
	if (ret < 0)
		return ret;
	base_ops = *b->ops;
	slow_ops = base_ops;
	slow_ops.pwrite = s_pwrite;
	slow_ops.submit = s_submit;
	slow_ops.flush = s_flush;
	b->ops = &slow_ops;
	return img_open_io(b, path, &o, out);
}

/* ---- requests ---- */

enum slot_state { S_FREE, S_RUNNING, S_HELD /* pair half done */ };

struct treq {
	struct img_aio_req req;
	uint8_t buf[MAX_LEN];
	uint8_t expect[MAX_LEN]; /* READ: what the range holds */
	int partner; /* slot of the other half of a racing pair, or -1 */
	atomic_bool pair_write; /* the write half of a racing pair */
	enum slot_state state;
};

static struct treq reqs[MAX_INFLIGHT];
static uint8_t ref[IMG_SIZE];
static uint8_t sector_busy[SECTORS];
static atomic_int bad;

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static int done_q[MAX_INFLIGHT];
static int done_n;

static void on_done(struct img_aio_req *req, int ret)
{
	struct treq *t = (struct treq *)req;

	if (ret < 0) {
		printf("# op %d at %" PRIu64 "+%" PRIu64 " failed: %s\n",
		       req->op, req->off, req->len,
		       req->error ? req->error : "?");
		atomic_fetch_add(&bad, 1);
	} else if (req->op == IMG_AIO_READ &&
		   memcmp(t->buf, t->expect, req->len)) {
		printf("# read at %" PRIu64 "+%" PRIu64 " differs\n", req->off,
		       req->len);
		atomic_fetch_add(&bad, 1);
	}
	pthread_mutex_lock(&done_lock);
	done_q[done_n++] = (int)(t - reqs);
	pthread_mutex_unlock(&done_lock);
}

static bool is_pair_write(const void *buf)
{
	for (int i = 0; i < MAX_INFLIGHT; i++)
		if (buf == reqs[i].buf)
			return atomic_load(&reqs[i].pair_write);
	return false;
}

static void mark(uint64_t off, uint64_t len, uint8_t v)
{
	for (uint64_t s = off / 512; s <= (off + len - 1) / 512; s++)
		sector_busy[s] = v;
}

static bool is_free(uint64_t off, uint64_t len)
{
	for (uint64_t s = off / 512; s <= (off + len - 1) / 512; s++)
		if (sector_busy[s])
			return false;
	return true;
}

/* A free slot other than not, or -1. */
static int free_slot(int not )
{
	for (int i = 0; i < MAX_INFLIGHT; i++)
		if (reqs[i].state == S_FREE && i != not )
			return i;
	return -1;
}

static void submit(struct img_aio *aio, struct img *img, int i)
{
	reqs[i].state = S_RUNNING;
	reqs[i].req.buf = reqs[i].buf;
	reqs[i].req.done = on_done;
	CHECK_OK(img_aio_submit(aio, img, &reqs[i].req));
}

/* Both halves of a racing pair are done: the cluster holds all of the write
 * or zeroes. */
static void settle_pair(struct img *img, struct treq *w)
{
	uint8_t got[CS], zero[CS] = { 0 };
	uint64_t off = w->req.off;

	CHECK_OK(img_read(img, got, off, CS));
	if (memcmp(got, w->buf, CS) && memcmp(got, zero, CS)) {
		printf("# racing write/discard at %" PRIu64
		       ": neither the write nor zeroes\n",
		       off);
		atomic_fetch_add(&bad, 1);
	}
	memcpy(ref + off, got, CS);
	mark(off, CS, 0);
}

/* Take completions (waiting for one if wait) and release their ranges. */
static struct img_aio *engine;

static void reap(struct img *img, bool wait)
{
	int q[MAX_INFLIGHT], n;

	/* Completions are delivered on this thread, by polling. */
	img_aio_poll(engine);
	pthread_mutex_lock(&done_lock);
	while (wait && !done_n) {
		pthread_mutex_unlock(&done_lock);
		img_aio_wait(engine);
		pthread_mutex_lock(&done_lock);
	}
	n = done_n;
	memcpy(q, done_q, sizeof(int) * (size_t)n);
	done_n = 0;
	pthread_mutex_unlock(&done_lock);
	for (int k = 0; k < n; k++) {
		struct treq *t = &reqs[q[k]], *o;

		t->state = S_FREE;
		if (t->partner < 0) {
			if (t->req.op != IMG_AIO_FLUSH)
				mark(t->req.off, t->req.len, 0);
			continue;
		}
		o = &reqs[t->partner];
		if (o->state == S_RUNNING) {
			t->state = S_HELD;
			continue;
		}
		settle_pair(img, t->req.op == IMG_AIO_WRITE ? t : o);
		atomic_store(&t->pair_write, false);
		atomic_store(&o->pair_write, false);
		o->state = S_FREE;
		t->partner = o->partner = -1;
	}
}

static unsigned run_ops(struct img_aio *aio, struct img *img, struct qt_rng *r)
{
	unsigned done = 0, pairs = 0;

	engine = aio;
	for (int i = 0; i < MAX_INFLIGHT; i++)
		reqs[i].partner = -1;
	while (done < N_OPS) {
		unsigned kind = (unsigned)qt_below(r, 100);
		int i = free_slot(-1), j;
		uint64_t off, len;

		if (i < 0) {
			reap(img, true);
			continue;
		}
		if (kind <
		    12) { /* racing pair: whole-cluster write + discard */
			off = qt_below(r, IMG_SIZE / CS) * CS;
			j = free_slot(i);
			if (j < 0 || !is_free(off, CS)) {
				reap(img, j < 0);
				continue;
			}
			mark(off, CS, 1);
			reqs[i].req = (struct img_aio_req){ .op = IMG_AIO_WRITE,
							    .off = off,
							    .len = CS };
			qt_fill(r, reqs[i].buf, CS);
			reqs[j].req = (struct img_aio_req){
				.op = IMG_AIO_DISCARD, .off = off, .len = CS
			};
			reqs[i].partner = j;
			reqs[j].partner = i;
			atomic_store(&reqs[i].pair_write, true);
			submit(aio, img, i);
			submit(aio, img, j);
			done += 2;
			pairs++;
			continue;
		}
		if (kind < 16) {
			reqs[i].req =
				(struct img_aio_req){ .op = IMG_AIO_FLUSH };
			submit(aio, img, i);
			done++;
			continue;
		}
		len = 1 + qt_below(r, MAX_LEN);
		off = qt_below(r, IMG_SIZE - len + 1);
		if (kind < 30) { /* cluster-aligned: frees clusters */
			len = CS * (1 + qt_below(r, 2));
			off = qt_below(r, IMG_SIZE / CS - 1) * CS;
		}
		if (!is_free(off, len)) {
			reap(img, false);
			continue;
		}
		mark(off, len, 1);
		reqs[i].req = (struct img_aio_req){ .off = off, .len = len };
		if (kind < 22) {
			reqs[i].req.op = IMG_AIO_DISCARD;
			memset(ref + off, 0, len);
		} else if (kind < 30) {
			reqs[i].req.op = IMG_AIO_ZERO;
			reqs[i].req.flags = IMG_ZERO_MAY_UNMAP;
			memset(ref + off, 0, len);
		} else if (kind < 70) {
			reqs[i].req.op = IMG_AIO_WRITE;
			qt_fill(r, reqs[i].buf, len);
			memcpy(ref + off, reqs[i].buf, len);
		} else {
			reqs[i].req.op = IMG_AIO_READ;
			memcpy(reqs[i].expect, ref + off, len);
		}
		submit(aio, img, i);
		done++;
	}
	for (;;) {
		bool any = false;

		for (int i = 0; i < MAX_INFLIGHT; i++)
			any |= reqs[i].state != S_FREE;
		if (!any)
			break;
		reap(img, true);
	}
	return pairs;
}

int main(void)
{
	const char *path, *ref_path;
	struct img_create_opts co = { .format = "qcow2", .size = IMG_SIZE };
	struct img_kv kv = { .key = "cluster_size", .value = "4096" };
	struct img_aio *aio;
	struct img_io *file;
	struct img *img;
	struct qt_rng r = { qt_seed(20261127) };
	int fd, st;

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver");
	path = test_path("image.qcow2");
	ref_path = test_path("ref.raw");
	co.opts = &kv;
	co.n_opts = 1;
	CHECK_OK(img_create(path, &co));
	CHECK_OK(open_slow(path, &file, &img));
	/* Start with every cluster allocated, so writes take the fast path. */
	qt_fill(&r, ref, IMG_SIZE);
	CHECK_OK(img_write(img, ref, 0, IMG_SIZE, 0));
	CHECK_OK(img_aio_new(16, &aio));
	printf("# %u racing write/discard pairs\n", run_ops(aio, img, &r));
	img_aio_free(aio);
	CHECK_EQ(atomic_load(&bad), 0);
	CHECK(qt_compare(img, ref, 0, IMG_SIZE, "after the run"));
	CHECK_OK(img_close(img));
	img_io_close(file);

	if (!qt_have_qemu_img()) {
		test_note("qemu-img not installed: external checks skipped");
		return test_done();
	}
	fflush(stdout);
	CHECK_EQ(qt_qemu_check(path), 0);
	fd = open(ref_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	CHECK(pwrite(fd, ref, IMG_SIZE, 0) == (ssize_t)IMG_SIZE);
	close(fd);
	st = test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", ref_path,
		     path);
	CHECK_EQ(st, 0);
	return test_done();
}
