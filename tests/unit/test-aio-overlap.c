/* SPDX-License-Identifier: MIT */
/*
 * Hundreds of requests in flight at once from one async engine on the same
 * unallocated qcow2 clusters and their neighbours, checked byte by byte
 * against a model: the safety net for the write path's serialisation of
 * overlapping allocating writes (today the image lock, later per-cluster
 * wait lists), for the order of copy-on-write and table updates, and for
 * discards and zeroes next to allocations.
 *
 * Overlapping in-flight writes have no defined order, so a round only asks
 * for what is determined: the round draws 1-3 random patterns for its
 * window (1-8 neighbouring clusters) and every write in it stores one
 * pattern's bytes for its own range. Where only writes of one pattern cover
 * a byte, its value is determined (overlapping writes store identical
 * bytes, neighbouring ones different bytes); where writes of several
 * patterns overlap, the byte must come from one of them, never from the old
 * contents or a copy-on-write fill. The window is cut into segments that
 * are written (many writes of random sub-ranges, from one byte to the whole
 * run, sector-aligned or not, across cluster boundaries), zeroed, discarded,
 * read or left alone; segments never share a byte, but they share clusters
 * and subclusters. After img_aio_drain every byte of the window must hold a
 * pattern of a write covering it, zero (zeroed), its old value (read or
 * untouched; reads in flight must return it too), or for discarded bytes
 * the old value, zero or the backing file's byte. Every request must
 * complete exactly once, successfully. With qcow2's allocating writes
 * moving their data outside the image lock and nothing else ordering them
 * (as if per-cluster wait lists were missing), every variant fails within a
 * few rounds: lost writes, leaked clusters.
 *
 * Variants: 64 KiB clusters, 512-byte clusters, extended_l2=on, 64 KiB
 * clusters (plain and extended L2) over a raw backing file of random data,
 * so copy-on-write must read the backing, and two opened with
 * IMG_OPEN_DIRECT (cache=none: aligned transfers, bounce buffers). Their
 * requests are 4 KiB-aligned: a sub-block write that extends an O_DIRECT
 * file goes out as a whole block and is cut back afterwards, and that
 * truncate can still cut what a concurrent write appended (lib/io.c,
 * io_bounce_write; about one run in four fails on it).
 * IMG_TEST_DIRECT_UNALIGNED=1 sends them unaligned. Windows are taken from clusters
 * never touched before three times in four. At the end the whole image is
 * compared with the model, then the closed image must pass qemu-img check
 * (no leaks either: it was closed cleanly) and qemu-img compare against a
 * raw file made from the model. The seed is printed (IMG_TEST_SEED).
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define MAX_REQS 512
#define ROUNDS 24
#define AIO_THREADS 16
#define MAX_PATS 3
#define COV_ZERO MAX_PATS /* struct round.cov[COV_ZERO]: zeroes */

enum role { R_NONE, R_WRITE, R_ZERO, R_DISCARD, R_READ };

struct variant {
	const char *name;
	uint64_t cs;
	bool extl2;
	bool backing;
	uint64_t nclusters;
	unsigned open_flags; /* IMG_OPEN_DIRECT: bounce buffers, alignment */
};

static const struct variant variants[] = {
	{ "64k", 65536, false, false, 128, 0 },
	{ "512", 512, false, false, 2048, 0 },
	{ "64k-extl2", 65536, true, false, 128, 0 },
	{ "64k-backing", 65536, false, true, 128, 0 },
	{ "64k-extl2-backing", 65536, true, true, 128, 0 },
	{ "64k-direct", 65536, false, true, 128, IMG_OPEN_DIRECT },
	{ "64k-extl2-direct", 65536, true, false, 128, IMG_OPEN_DIRECT },
};

struct treq {
	struct img_aio_req req;
	const uint8_t *expect; /* READ: what the range holds */
	atomic_int ndone;
	int ret;
	bool bad_read;
};

/* One variant's image and its model. */
struct ctx {
	const struct variant *v;
	/* Writes, zeroes, discards and segments fall on multiples of it. */
	uint64_t align;
	struct img *img;
	struct img_aio *aio;
	uint64_t size;
	uint8_t *model; /* what every guest byte holds */
	uint8_t *back; /* the backing file's bytes (zeroes without one) */
	bool *touched; /* per cluster: a round used it already */
	unsigned max_inflight;
	unsigned long nreqs, bad_bytes;
};

/* One round: its window, the roles of its bytes and its requests. */
struct round {
	uint64_t off, len; /* the window, guest bytes */
	uint8_t *role; /* per window byte */
	/* Per window byte: cov[k][i], a write of pattern k (or a zero, for
	 * COV_ZERO) covers byte i. */
	uint8_t *cov[MAX_PATS + 1];
	uint8_t *pat[MAX_PATS]; /* what writes store, per window byte */
	unsigned npat;
	uint8_t *old; /* the model's window before the round */
	uint64_t seg_end[10]; /* the segments: ends, ascending, last = len */
	struct treq reqs[MAX_REQS];
	void *readbuf[MAX_REQS];
	unsigned n;
};

static struct round rd;

static void on_done(struct img_aio_req *req, int ret)
{
	struct treq *t = (struct treq *)req;

	atomic_fetch_add(&t->ndone, 1);
	t->ret = ret;
	if (ret < 0)
		printf("# %s at %#" PRIx64 "+%" PRIu64 " failed: %s\n",
		       req->op == IMG_AIO_WRITE ? "write" :
		       req->op == IMG_AIO_READ	? "read" :
		       req->op == IMG_AIO_ZERO	? "zero" :
						  "discard",
		       req->off, req->len, req->error ? req->error : "?");
	else if (req->op == IMG_AIO_READ &&
		 memcmp(req->buf, t->expect, req->len))
		t->bad_read = true;
}

/* A request on window bytes [a, b); a write stores pattern pat. */
static void submit(struct ctx *c, enum img_aio_op op, uint64_t a, uint64_t b,
		   unsigned flags, unsigned pat)
{
	struct treq *t;

	if (op != IMG_AIO_READ) {
		/* Outwards: runs of one role start and end aligned. */
		a = a / c->align * c->align;
		b = (b + c->align - 1) / c->align * c->align;
	}
	if (rd.n == MAX_REQS || b <= a)
		return;
	t = &rd.reqs[rd.n];
	t->req = (struct img_aio_req){ .op = op,
				       .off = rd.off + a,
				       .len = b - a,
				       .flags = flags,
				       .done = on_done };
	atomic_store(&t->ndone, 0);
	t->ret = 1;
	t->bad_read = false;
	t->expect = NULL;
	if (op == IMG_AIO_WRITE) {
		/* The pattern outlives the round's requests. */
		t->req.buf = rd.pat[pat] + a;
		memset(rd.cov[pat] + a, 1, b - a);
	} else if (op == IMG_AIO_ZERO) {
		memset(rd.cov[COV_ZERO] + a, 1, b - a);
	} else if (op == IMG_AIO_READ) {
		rd.readbuf[rd.n] = malloc(b - a);
		if (!rd.readbuf[rd.n]) {
			CHECK(0);
			return;
		}
		t->req.buf = rd.readbuf[rd.n];
		t->expect = rd.old + a;
	}
	rd.n++;
	CHECK_OK(img_aio_submit(c->aio, c->img, &t->req));
	if (img_aio_inflight(c->aio) > c->max_inflight)
		c->max_inflight = img_aio_inflight(c->aio);
}

/* Sub-range [*a, *b) of the window run [s, e): tiny, sector-aligned, up to
 * 16 KiB, or anything up to the whole run. */
static void pick_range(struct qt_rng *r, uint64_t s, uint64_t e, uint64_t *a,
		       uint64_t *b)
{
	uint64_t n = e - s, max;

	switch (qt_below(r, 4)) {
	case 0:
		max = 600;
		break;
	case 1: {
		/* Whole sectors of the guest, if the run holds one. */
		uint64_t first = (rd.off + s + 511) / 512 * 512 - rd.off;
		uint64_t secs = first < e ? (e - first) / 512 : 0;

		if (secs) {
			uint64_t k = qt_below(r, secs);

			*a = first + k * 512;
			*b = *a + 512 * (1 + qt_below(r, secs - k));
			return;
		}
		max = n;
		break;
	}
	case 2:
		max = 16384;
		break;
	default:
		max = n;
		break;
	}
	if (max > n)
		max = n;
	*b = 1 + qt_below(r, max); /* length */
	*a = s + qt_below(r, n - *b + 1);
	*b += *a;
}

/* Where the segment holding window byte p starts and ends. */
static void seg_at(uint64_t p, uint64_t *s, uint64_t *e)
{
	unsigned i = 0;

	while (rd.seg_end[i] <= p)
		i++;
	*s = i ? rd.seg_end[i - 1] : 0;
	*e = rd.seg_end[i];
}

/* The run of role role containing window byte p: [*s, *e), whole
 * neighbouring segments of that role included. */
static void run_at(uint64_t p, uint8_t role, uint64_t *s, uint64_t *e)
{
	uint64_t a, b;

	seg_at(p, s, e);
	while (*s > 0 && rd.role[*s - 1] == role)
		seg_at(*s - 1, s, &b);
	while (*e < rd.len && rd.role[*e] == role)
		seg_at(*e, &a, e);
}

/* A window of w clusters, untouched ones three times in four if there are. */
static uint64_t pick_window(struct ctx *c, struct qt_rng *r, uint64_t w)
{
	bool fresh = qt_below(r, 4) != 0;
	uint64_t c0 = 0;

	for (int tries = 0; tries < 64; tries++) {
		bool ok = true;

		c0 = qt_below(r, c->v->nclusters - w + 1);
		for (uint64_t k = 0; fresh && k < w; k++)
			ok &= !c->touched[c0 + k];
		if (ok)
			break;
	}
	for (uint64_t k = 0; k < w; k++)
		c->touched[c0 + k] = true;
	return c0;
}

/* Cut the window into segments with roles; hot rounds write all of it. */
static void assign_roles(struct ctx *c, struct qt_rng *r, bool hot)
{
	uint64_t cuts[10], ncuts = hot ? 0 : 1 + qt_below(r, 8), prev = 0;

	for (uint64_t i = 0; i < ncuts; i++) {
		uint64_t p = 1 + qt_below(r, rd.len - 1);
		uint64_t g = qt_below(r, 3) == 0 ? c->v->cs :
			     qt_below(r, 2)	 ? 512 :
						   1;

		if (g < c->align)
			g = c->align;

		cuts[i] = (rd.off + p) / g * g - rd.off;
		if (cuts[i] == 0 || cuts[i] >= rd.len)
			cuts[i] = c->align > 1 ? rd.len : p;
	}
	/* Sort the few cuts. */
	for (uint64_t i = 1; i < ncuts; i++)
		for (uint64_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			uint64_t t = cuts[j];

			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	cuts[ncuts] = rd.len;
	memcpy(rd.seg_end, cuts, sizeof(cuts));
	for (uint64_t i = 0; i <= ncuts; i++) {
		unsigned k = (unsigned)qt_below(r, 20);
		uint8_t role = hot || k < 10 ? R_WRITE :
			       k < 13	     ? R_ZERO :
			       k < 15	     ? R_DISCARD :
			       k < 18	     ? R_READ :
					       R_NONE;

		memset(rd.role + prev, role, cuts[i] - prev);
		prev = cuts[i];
	}
}

static void submit_writes(struct ctx *c, struct qt_rng *r, unsigned nwrites)
{
	uint64_t s, e, a, b;

	for (unsigned i = 0; i < nwrites; i++) {
		uint64_t p = qt_below(r, rd.len);

		if (qt_below(r, 4) == 0 && rd.len > c->v->cs) {
			/* Across a cluster boundary. */
			uint64_t bnd = c->v->cs *
				       (1 + qt_below(r, rd.len / c->v->cs - 1));

			if (rd.role[bnd - 1] != R_WRITE ||
			    rd.role[bnd] != R_WRITE)
				continue;
			run_at(bnd, R_WRITE, &s, &e);
			a = bnd - 1 - qt_below(r, img_min(bnd - s, 8192));
			b = bnd + 1 + qt_below(r, img_min(e - bnd, 8192));
			submit(c, IMG_AIO_WRITE, a, b, 0,
			       (unsigned)qt_below(r, rd.npat));
			continue;
		}
		if (rd.role[p] != R_WRITE)
			continue;
		run_at(p, R_WRITE, &s, &e);
		pick_range(r, s, e, &a, &b);
		submit(c, IMG_AIO_WRITE, a, b, 0,
		       (unsigned)qt_below(r, rd.npat));
	}
}

/* The zeroes, discards and reads of the segments that have those roles. */
static void submit_others(struct ctx *c, struct qt_rng *r)
{
	uint64_t s, e, a, b;

	for (uint64_t p = 0; p < rd.len; p = e) {
		run_at(p, rd.role[p], &s, &e);
		switch (rd.role[p]) {
		case R_ZERO:
			/* The whole segment, then overlapping pieces. */
			submit(c, IMG_AIO_ZERO, s, e,
			       qt_below(r, 2) ? IMG_ZERO_MAY_UNMAP : 0, 0);
			for (int k = (int)qt_below(r, 3); k > 0; k--) {
				pick_range(r, s, e, &a, &b);
				submit(c, IMG_AIO_ZERO, a, b,
				       qt_below(r, 2) ? IMG_ZERO_MAY_UNMAP : 0,
				       0);
			}
			break;
		case R_DISCARD:
			submit(c, IMG_AIO_DISCARD, s, e, 0, 0);
			break;
		case R_READ:
			for (int k = 1 + (int)qt_below(r, 6); k > 0; k--) {
				pick_range(r, s, e, &a, &b);
				submit(c, IMG_AIO_READ, a, b, 0, 0);
			}
			break;
		default:
			break;
		}
	}
}

/* Written window byte i holds g: the pattern of a write that covers it,
 * else (*want on entry) its old value. *want: a value it may have. */
static bool written_ok(uint64_t i, uint8_t g, uint8_t *want)
{
	bool covered = false, ok = false;

	for (unsigned k = 0; k < MAX_PATS; k++) {
		if (!rd.cov[k][i])
			continue;
		if (!covered)
			*want = rd.pat[k][i];
		covered = true;
		ok |= g == rd.pat[k][i];
	}
	return covered ? ok : g == *want;
}

/* Check the round's requests and the window, and update the model. */
static bool settle(struct ctx *c, unsigned roundno)
{
	uint8_t *got = malloc(rd.len);
	unsigned long bad = 0;
	bool ok = true;

	if (!got) {
		CHECK(0);
		return false;
	}
	for (unsigned i = 0; i < rd.n; i++) {
		struct treq *t = &rd.reqs[i];
		int nd = atomic_load(&t->ndone);

		if (nd != 1 || t->ret != 0 || t->bad_read) {
			printf("# round %u: %s request %u (op %d at %#" PRIx64
			       "+%" PRIu64 "): done %d times, ret %d%s\n",
			       roundno, c->v->name, i, t->req.op, t->req.off,
			       t->req.len, nd, t->ret,
			       t->bad_read ? ", read wrong data" : "");
			ok = false;
		}
		free(rd.readbuf[i]);
		rd.readbuf[i] = NULL;
	}
	CHECK(ok);
	CHECK_OK(img_read(c->img, got, rd.off, rd.len));
	for (uint64_t i = 0; i < rd.len; i++) {
		uint8_t want = rd.old[i], g = got[i];
		bool good;

		if (rd.role[i] == R_ZERO && rd.cov[COV_ZERO][i])
			want = 0;
		good = rd.role[i] == R_WRITE ? written_ok(i, g, &want) :
					       g == want;
		if (rd.role[i] == R_DISCARD)
			good |= g == 0 || g == c->back[rd.off + i];
		if (!good && bad++ < 5)
			printf("# round %u: %s byte %#" PRIx64
			       " (role %d) is %#x, expected %#x\n",
			       roundno, c->v->name, rd.off + i, rd.role[i], g,
			       want);
		c->model[rd.off + i] = g;
	}
	c->bad_bytes += bad;
	CHECK_EQ(bad, 0);
	free(got);
	return ok && !bad;
}

static bool run_round(struct ctx *c, struct qt_rng *r, unsigned roundno)
{
	bool hot = qt_below(r, 3) == 0;
	uint64_t w = hot ? 1 + qt_below(r, 2) : 1 + qt_below(r, 4);
	uint64_t c0;

	if (c->v->cs < 4096)
		w *= 2; /* as many requests in fewer bytes */
	c0 = pick_window(c, r, w);
	rd.off = c0 * c->v->cs;
	rd.len = w * c->v->cs;
	rd.n = 0;
	memcpy(rd.old, c->model + rd.off, rd.len);
	for (unsigned k = 0; k <= MAX_PATS; k++)
		memset(rd.cov[k], 0, rd.len);
	rd.npat = 1 + (unsigned)qt_below(r, MAX_PATS);
	for (unsigned k = 0; k < rd.npat; k++)
		qt_fill(r, rd.pat[k], rd.len);
	assign_roles(c, r, hot);
	/* Interleave: the other requests go in among the writes. */
	submit_writes(c, r, 60 + (unsigned)qt_below(r, 120));
	submit_others(c, r);
	submit_writes(c, r, 60 + (unsigned)qt_below(r, 200));
	c->nreqs += rd.n;
	img_aio_drain(c->aio);
	return settle(c, roundno);
}

static void run_variant(const struct variant *v, struct qt_rng *r)
{
	char name[96], csz[32];
	struct ctx c = { .v = v, .size = v->cs * v->nclusters, .align = 1 };
	struct img_kv kv[2] = { { "cluster_size", csz },
				{ "extended_l2", "on" } };
	struct img_create_opts co = { .format = "qcow2",
				      .size = c.size,
				      .opts = kv,
				      .n_opts = v->extl2 ? 2 : 1 };
	const char *path, *ref_path, *back_path;
	unsigned roundno;

	/* See the top: O_DIRECT images get 4 KiB-aligned requests unless
	 * IMG_TEST_DIRECT_UNALIGNED=1. */
	if ((v->open_flags & IMG_OPEN_DIRECT) &&
	    !getenv("IMG_TEST_DIRECT_UNALIGNED"))
		c.align = 4096;
	snprintf(csz, sizeof(csz), "%" PRIu64, v->cs);
	snprintf(name, sizeof(name), "%s.qcow2", v->name);
	path = test_path(name);
	snprintf(name, sizeof(name), "%s.raw", v->name);
	ref_path = test_path(name);
	snprintf(name, sizeof(name), "%s-backing.raw", v->name);
	back_path = test_path(name);
	c.model = calloc(1, c.size);
	c.back = calloc(1, c.size);
	c.touched = calloc(v->nclusters, sizeof(bool));
	rd.role = malloc(8 * v->cs);
	for (unsigned k = 0; k <= MAX_PATS; k++)
		rd.cov[k] = malloc(8 * v->cs);
	for (unsigned k = 0; k < MAX_PATS; k++)
		rd.pat[k] = malloc(8 * v->cs);
	rd.old = malloc(8 * v->cs);
	if (!c.model || !c.back || !c.touched || !rd.role || !rd.cov[0] ||
	    !rd.cov[1] || !rd.cov[2] || !rd.cov[3] || !rd.pat[0] ||
	    !rd.pat[1] || !rd.pat[2] || !rd.old) {
		CHECK(0);
		goto out;
	}
	if (v->backing) {
		qt_fill(r, c.back, c.size);
		memcpy(c.model, c.back, c.size);
		CHECK_OK(qt_write_file(back_path, c.back, c.size));
		co.backing_file = back_path;
		co.backing_fmt = "raw";
	}
	CHECK_OK(img_create(path, &co));
	if (img_open(path,
		     &(struct img_open_opts){ .format = "qcow2",
					      .flags = v->open_flags },
		     &c.img) < 0) {
		printf("# %s: open: %s\n", v->name, img_last_error());
		/* A file system without O_DIRECT (tmpfs) cannot run it. */
		CHECK(v->open_flags & IMG_OPEN_DIRECT);
		goto out;
	}
	CHECK_OK(img_aio_new(AIO_THREADS, &c.aio));
	for (roundno = 0; roundno < ROUNDS; roundno++)
		if (!run_round(&c, r, roundno))
			break;
	img_aio_free(c.aio);
	CHECK(qt_compare(c.img, c.model, 0, c.size, v->name));
	CHECK_OK(img_close(c.img));
	test_note("%s: %u rounds, %lu requests, up to %u in flight, %lu "
		  "wrong bytes",
		  v->name, roundno, c.nreqs, c.max_inflight, c.bad_bytes);
	CHECK_OK(qt_write_file(ref_path, c.model, c.size));
	if (qt_have_qemu_img()) {
		fflush(stdout);
		CHECK_EQ(qt_qemu_check(path), 0);
		CHECK_EQ(test_sh("qemu-img compare -q -f raw -F qcow2 '%s' "
				 "'%s'",
				 ref_path, path),
			 0);
	}
out:
	free(c.model);
	free(c.back);
	free(c.touched);
	free(rd.role);
	for (unsigned k = 0; k <= MAX_PATS; k++)
		free(rd.cov[k]);
	for (unsigned k = 0; k < MAX_PATS; k++)
		free(rd.pat[k]);
	free(rd.old);
}

int main(void)
{
	struct qt_rng r = { qt_seed(20261208) };
	struct img_aio *probe;

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver");
	if (img_aio_new(1, &probe) == 0) {
		test_note("engine %s", img_aio_uses_ring(probe) ?
					       "with an io_uring ring" :
					       "without a ring (psync pool)");
		img_aio_free(probe);
	}
	if (!qt_have_qemu_img())
		test_note("qemu-img not installed: external checks skipped");
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++)
		run_variant(&variants[i], &r);
	return test_done();
}
