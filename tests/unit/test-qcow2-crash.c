/* SPDX-License-Identifier: MIT */
/*
 * Crash replay for the qcow2 driver: a workload of writes, zeroes, discards
 * and flushes runs on the faulty backend, which records every host write,
 * zero, truncate and flush. Every prefix of that log, applied to the freshly
 * created file, is the file a crash at that point would leave; so is a prefix
 * that ends at a host flush followed by any subset, in any order, of the
 * writes up to the next host flush (the disk may reorder those). Each such
 * file must open, check with no corruption (leaks are allowed: a crash may
 * strand clusters whose refcount was raised before the L2 entry using them
 * was written), and still hold every guest write that a completed img_flush
 * covered: bytes no later operation touched must equal the reference taken
 * when that flush returned. With lazy refcounts the image is repaired by a
 * read-write open first, as the spec requires of a dirty image.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define MAX_FLUSHES 32
/* The workload needs a few thousand host ops; past this the driver ran away
 * (the armed fault ends the workload instead of letting it fill memory). */
#define MAX_OPS 100000

struct config {
	const char *name;
	const char *opts;
	uint64_t size;
	bool lazy;
};

static const struct config configs[] = {
	/* 512-byte clusters, 64-bit refcounts: L2 tables every 32 KiB of
	 * guest space and a refcount table that must grow past 2 MiB. */
	{ "512 refcount_bits=64", "cluster_size=512,refcount_bits=64",
	  4ull << 20, false },
	{ "4k", "cluster_size=4096", 4ull << 20, false },
	{ "4k lazy_refcounts", "cluster_size=4096,lazy_refcounts=on",
	  4ull << 20, true },
};

/* A byte range whose contents a flush made durable. */
struct range {
	uint64_t off, len;
};

struct state {
	const struct config *c;
	struct range *stable[MAX_FLUSHES + 1]; /* per flush, built on demand */
	size_t n_stable[MAX_FLUSHES + 1];
	uint8_t *ref; /* current guest contents */
	uint16_t *last_epoch; /* per byte: last guest epoch that touched it */
	unsigned epoch; /* guest flushes completed so far */
	uint8_t *snap[MAX_FLUSHES + 1]; /* guest contents at flush f */
	size_t flush_pos[MAX_FLUSHES + 1]; /* log length when it returned */
	uint8_t *buf; /* c->size bytes for reading the image back */
	uint8_t *init; /* the file right after create */
	size_t init_len;
	unsigned long n_checked, n_bad;
};

static void touch(struct state *s, uint64_t off, uint64_t len)
{
	for (uint64_t i = off; i < off + len; i++)
		s->last_epoch[i] = (uint16_t)(s->epoch + 1);
}

static int guest_flush(struct state *s, struct img *img, struct img_io *faulty,
		       bool close)
{
	const struct img_io_log_entry *e;
	size_t n;
	int ret = close ? img_close(img) : img_flush(img);

	if (ret < 0 || s->epoch >= MAX_FLUSHES)
		return ret < 0 ? ret : -ENOSPC;
	img_io_faulty_log(faulty, &e, &n);
	s->epoch++;
	s->flush_pos[s->epoch] = n;
	s->snap[s->epoch] = malloc(s->c->size);
	if (!s->snap[s->epoch])
		return -ENOMEM;
	memcpy(s->snap[s->epoch], s->ref, s->c->size);
	return 0;
}

static int workload(struct state *s, struct img_io *faulty, uint64_t seed)
{
	uint64_t size = s->c->size;
	struct qt_rng rng = { seed ^ 0x5eed };
	uint8_t *buf = malloc(320 << 10);
	struct img *img;
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = qt_open_borrowed(faulty, 0, &img);
	if (ret < 0)
		goto out;
	for (int round = 0; round < 5 && ret >= 0; round++) {
		for (int i = 0; i < 12 && ret >= 0; i++) {
			uint64_t len = 1 + qt_below(&rng, 100 << 10);
			uint64_t off = qt_below(&rng, size - len);

			qt_fill(&rng, buf, len);
			ret = img_write(img, buf, off, len, 0);
			if (ret >= 0) {
				memcpy(s->ref + off, buf, len);
				touch(s, off, len);
			}
		}
		if (ret >= 0) {
			uint64_t off = qt_below(&rng, size - 70000);

			ret = img_zero(img, off, 70000,
				       round % 2 ? IMG_ZERO_MAY_UNMAP : 0);
			memset(s->ref + off, 0, 70000);
			touch(s, off, 70000);
		}
		if (ret >= 0 && round % 2) {
			/* Discarded contents are unspecified: touched, and
			 * the reference takes what the image now reads. */
			uint64_t off = qt_below(&rng, size - 200000);

			ret = img_discard(img, off, 200000);
			if (ret >= 0)
				ret = img_read(img, s->ref + off, off, 200000);
			touch(s, off, 200000);
		}
		if (ret >= 0)
			ret = guest_flush(s, img, faulty, false);
	}
	/* Unflushed writes, then close (which flushes). */
	for (int i = 0; i < 6 && ret >= 0; i++) {
		uint64_t off = qt_below(&rng, size - 5000);

		qt_fill(&rng, buf, 5000);
		ret = img_write(img, buf, off, 5000, 0);
		memcpy(s->ref + off, buf, 5000);
		touch(s, off, 5000);
	}
	if (ret >= 0) {
		ret = guest_flush(s, img, faulty, true);
		goto out;
	}
	printf("# workload failed: %s\n", img_last_error());
	img_close(img);
out:
	free(buf);
	return ret;
}

/* The ranges no operation after flush f touched, as sorted runs. */
static const struct range *stable_ranges(struct state *s, unsigned f, size_t *n)
{
	uint64_t size = s->c->size;

	if (!s->stable[f]) {
		size_t cap = 16, k = 0;
		struct range *r = malloc(cap * sizeof(*r));

		for (uint64_t i = 0; r && i < size;) {
			uint64_t j = i;

			while (j < size && s->last_epoch[j] <= f)
				j++;
			if (j > i) {
				if (k == cap) {
					struct range *p;

					cap *= 2;
					p = realloc(r, cap * sizeof(*r));
					if (!p) {
						free(r);
						r = NULL;
						break;
					}
					r = p;
				}
				r[k].off = i;
				r[k++].len = j - i;
			}
			while (j < size && s->last_epoch[j] > f)
				j++;
			i = j;
		}
		s->stable[f] = r;
		s->n_stable[f] = r ? k : 0;
	}
	*n = s->n_stable[f];
	return s->stable[f];
}

/* Open the crashed file and check it; f is the last completed flush. */
static bool verify(struct state *s, struct img_io *mem, unsigned f,
		   const char *what)
{
	uint64_t size = s->c->size;
	struct img_check res;
	struct img *img;
	uint8_t *buf = s->buf;
	bool ok = true;
	int ret;

	s->n_checked++;
	if (s->c->lazy) {
		/* A dirty image is repaired by the first read-write open. */
		ret = qt_open_borrowed(mem, 0, &img);
		if (ret >= 0)
			ret = img_close(img);
		if (ret < 0) {
			printf("# %s: repairing open failed: %s\n", what,
			       img_last_error());
			return false;
		}
	}
	ret = qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img);
	if (ret < 0) {
		printf("# %s: does not open: %s\n", what, img_last_error());
		return false;
	}
	ret = qt_check(img, &res, NULL);
	if (ret < 0 || res.corruptions) {
		printf("# %s: check: %d, %" PRIu64 " corruptions: %s\n", what,
		       ret, ret < 0 ? 0 : res.corruptions, img_last_error());
		ok = false;
	}
	ret = img_read(img, buf, 0, size);
	if (ret < 0) {
		printf("# %s: read failed: %s\n", what, img_last_error());
		ok = false;
	} else {
		size_t n;
		const struct range *r = stable_ranges(s, f, &n);

		for (size_t k = 0; r && k < n && ok; k++) {
			uint64_t i = r[k].off, end = i + r[k].len;

			if (!memcmp(buf + i, s->snap[f] + i, r[k].len))
				continue;
			while (i < end && buf[i] == s->snap[f][i])
				i++;
			printf("# %s: byte %#" PRIx64 " flushed at flush %u "
			       "reads %#x, expected %#x\n",
			       what, i, f, buf[i], s->snap[f][i]);
			ok = false;
		}
	}
	img_close(img);
	return ok;
}

/* The last guest flush complete when the first n log entries are on disk. */
static unsigned flushed_at(const struct state *s, size_t n)
{
	unsigned f = 0;

	while (f < s->epoch && s->flush_pos[f + 1] <= n)
		f++;
	return f;
}

static void replay(struct state *s, const struct img_io_log_entry *log,
		   size_t n_log, uint64_t seed)
{
	struct qt_rng rng = { seed };
	char what[128];
	size_t *idx = malloc(n_log * sizeof(*idx) + 1);

	/* Every prefix. */
	for (size_t k = 0; k <= n_log && s->n_bad < 10; k++) {
		struct img_io *mem;
		unsigned f = flushed_at(s, k);

		if (img_io_mem_new(s->init, s->init_len, &mem) < 0 ||
		    img_io_log_apply(mem, log, k) < 0) {
			CHECK(!"replay");
			img_io_close(mem);
			break;
		}
		snprintf(what, sizeof(what), "%s: crash after %zu of %zu",
			 s->c->name, k, n_log);
		if (!verify(s, mem, f, what))
			s->n_bad++;
		img_io_close(mem);
	}

	/* Reorderings: prefix up to a host flush, then a random subset of
	 * the writes before the next one, in random order. */
	for (size_t h = 0; idx && h < n_log && s->n_bad < 10; h++) {
		size_t start = h, end, m = 0;

		if (h > 0 && log[h - 1].kind != IMG_LOG_FLUSH)
			continue;
		for (end = start; end < n_log && log[end].kind != IMG_LOG_FLUSH;
		     end++)
			if (log[end].kind == IMG_LOG_WRITE ||
			    log[end].kind == IMG_LOG_ZERO)
				idx[m++] = end;
		if (m < 2)
			continue;
		for (int trial = 0; trial < 3; trial++) {
			struct img_io *mem;
			unsigned f = flushed_at(s, start);
			size_t keep = 0;
			int ret;

			/* Shuffle, then keep a random-length head. */
			for (size_t i = m - 1; i > 0; i--) {
				size_t j = qt_below(&rng, i + 1), t = idx[i];

				idx[i] = idx[j];
				idx[j] = t;
			}
			keep = 1 + qt_below(&rng, m);
			if (img_io_mem_new(s->init, s->init_len, &mem) < 0)
				break;
			ret = img_io_log_apply(mem, log, start);
			for (size_t i = 0; i < keep && ret >= 0; i++)
				ret = img_io_log_apply(mem, &log[idx[i]], 1);
			CHECK_OK(ret);
			snprintf(what, sizeof(what),
				 "%s: %zu of %zu reordered writes after entry "
				 "%zu",
				 s->c->name, keep, m, start);
			if (!verify(s, mem, f, what))
				s->n_bad++;
			img_io_close(mem);
		}
	}
	free(idx);
}

static void run_config(const struct config *c, uint64_t seed)
{
	struct state s = { .c = c };
	struct img_io *mem = NULL, *b, *faulty = NULL;
	const struct img_io_log_entry *log;
	const uint8_t *data;
	size_t n_log, len;
	int ret;

	s.ref = calloc(1, c->size);
	s.last_epoch = calloc(c->size, sizeof(*s.last_epoch));
	s.snap[0] = calloc(1, c->size);
	s.buf = malloc(c->size);
	if (!s.ref || !s.last_epoch || !s.snap[0] || !s.buf) {
		CHECK(!"out of memory");
		goto out;
	}
	ret = qt_create_mem(c->opts, c->size, NULL, NULL, &mem);
	CHECK_OK(ret);
	if (ret < 0)
		goto out;
	img_io_mem_data(mem, &data, &len);
	s.init = malloc(len + 1);
	if (!s.init)
		goto out;
	memcpy(s.init, data, len);
	s.init_len = len;
	if (qt_io_borrow(mem, &b) < 0 || img_io_faulty_new(b, &faulty) < 0) {
		CHECK(!"faulty backend");
		goto out;
	}
	img_io_faulty_arm(faulty, MAX_OPS, ENOSPC, true);
	ret = workload(&s, faulty, seed);
	CHECK_OK(ret);
	if (ret < 0) {
		if (img_io_faulty_ops(faulty) >= MAX_OPS)
			printf("# %s: workload ran away (%d host ops)\n",
			       c->name, MAX_OPS);
		goto out;
	}
	img_io_faulty_log(faulty, &log, &n_log);
	img_io_mem_data(mem, &data, &len);
	test_note("%s: %zu log entries, %u guest flushes, refcount table of "
		  "%u clusters",
		  c->name, n_log, s.epoch, len >= 60 ? img_be32(data + 56) : 0);
	replay(&s, log, n_log, seed);
	CHECK_EQ(s.n_bad, 0);
	printf("%s - %s: %lu crash states checked, %lu bad\n",
	       s.n_bad ? "not ok" : "ok", c->name, s.n_checked, s.n_bad);
out:
	img_io_close(faulty);
	img_io_close(mem);
	for (unsigned i = 0; i <= MAX_FLUSHES; i++) {
		free(s.snap[i]);
		free(s.stable[i]);
	}
	free(s.init);
	free(s.buf);
	free(s.ref);
	free(s.last_epoch);
}

int main(void)
{
	uint64_t seed;

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	seed = qt_seed(4242);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(configs); i++)
		run_config(&configs[i], seed + i);
	return test_done();
}
