/* SPDX-License-Identifier: MIT */
/*
 * Tests for the metadata table cache on a faulty mem file: hits do no I/O,
 * LRU eviction writes dirty tables, pinned tables are never evicted (the
 * cache grows instead), forget drops dirty data, I/O errors leave the cache
 * usable, and the dependency order seen in the write log: refcount block
 * write, then flush, then the L2 table, both on write-back and on eviction.
 */
#include "internal.h"
#include "tap.h"

#define TS 4096

static struct img_io *new_file(void)
{
	struct img_io *mem, *io;
	uint8_t *init = calloc(1, 64 * TS);

	/* Each table starts with its own index so reads are visible. */
	for (unsigned i = 0; i < 64; i++)
		init[i * TS] = (uint8_t)i;
	if (img_io_mem_new(init, 64 * TS, &mem) < 0 ||
	    img_io_faulty_new(mem, &io) < 0) {
		fprintf(stderr, "setup: %s\n", img_last_error());
		exit(1);
	}
	free(init);
	return io;
}

static uint8_t file_byte(struct img_io *io, uint64_t off)
{
	uint8_t b = 0xee;

	CHECK_OK(img_io_pread(io, &b, 1, off));
	return b;
}

static void test_hits_and_eviction(void)
{
	struct img_io *io = new_file();
	struct img_cache *c;
	uint8_t *t, *t2;
	uint64_t ops;

	CHECK_OK(img_cache_new(io, TS, 4, &c));
	CHECK_OK(img_cache_get(c, 3 * TS, (void **)&t));
	CHECK_EQ(t[0], 3);
	CHECK_EQ((uintptr_t)t % 4096, 0);
	img_cache_put(c, t);
	ops = img_io_faulty_ops(io);
	CHECK_OK(img_cache_get(c, 3 * TS, (void **)&t2));
	CHECK(t2 == t);
	CHECK_EQ(img_io_faulty_ops(io), ops);
	t2[1] = 0x77;
	img_cache_mark_dirty(c, t2);
	img_cache_put(c, t2);
	/* Nothing written until eviction or write-back. */
	CHECK_EQ(file_byte(io, 3 * TS + 1), 0);

	/* Four other tables evict table 3 (the least recently used). */
	for (unsigned i = 10; i < 14; i++) {
		CHECK_OK(img_cache_get(c, i * TS, (void **)&t));
		CHECK_EQ(t[0], i);
		img_cache_put(c, t);
	}
	CHECK_EQ(file_byte(io, 3 * TS + 1), 0x77);

	/* LRU: touching 10 makes 11 the victim. */
	CHECK_OK(img_cache_get(c, 10 * TS, (void **)&t));
	img_cache_put(c, t);
	CHECK_OK(img_cache_get(c, 20 * TS, (void **)&t));
	img_cache_put(c, t);
	ops = img_io_faulty_ops(io);
	CHECK_OK(img_cache_get(c, 10 * TS, (void **)&t));
	img_cache_put(c, t);
	CHECK_EQ(img_io_faulty_ops(io), ops);
	CHECK_OK(img_cache_get(c, 11 * TS, (void **)&t));
	img_cache_put(c, t);
	CHECK_EQ(img_io_faulty_ops(io), ops + 1);

	/* get_empty: zeroes, no read; a dirty table survives write-back. */
	ops = img_io_faulty_ops(io);
	CHECK_OK(img_cache_get_empty(c, 5 * TS, (void **)&t));
	CHECK_EQ(img_io_faulty_ops(io), ops);
	CHECK(img_is_zero(t, TS));
	t[7] = 9;
	img_cache_mark_dirty(c, t);
	img_cache_put(c, t);
	CHECK_OK(img_cache_write_back(c));
	CHECK_EQ(file_byte(io, 5 * TS), 0);
	CHECK_EQ(file_byte(io, 5 * TS + 7), 9);
	/* Nothing dirty: write-back does no I/O. */
	ops = img_io_faulty_ops(io);
	CHECK_OK(img_cache_write_back(c));
	CHECK_EQ(img_io_faulty_ops(io), ops);

	/* forget drops a dirty table without writing it. */
	CHECK_OK(img_cache_get(c, 6 * TS, (void **)&t));
	t[0] = 0x55;
	img_cache_mark_dirty(c, t);
	img_cache_put(c, t);
	img_cache_forget(c, 6 * TS);
	img_cache_forget(c, 60 * TS);
	CHECK_OK(img_cache_write_back(c));
	CHECK_EQ(file_byte(io, 6 * TS), 6);
	CHECK_OK(img_cache_get(c, 6 * TS, (void **)&t));
	CHECK_EQ(t[0], 6);
	img_cache_put(c, t);

	img_cache_free(c);
	img_io_close(io);
}

static void test_all_pinned(void)
{
	struct img_io *io = new_file();
	struct img_cache *c;
	uint8_t *t[40];
	unsigned got = 0;
	int ret = 0;

	CHECK_OK(img_cache_new(io, TS, 2, &c));
	/* Pinning more tables than the cache holds grows it; at some bound
	 * it fails -ENOMEM with a message, and never blocks. */
	for (unsigned i = 0; i < 40; i++) {
		ret = img_cache_get(c, (uint64_t)i * TS, (void **)&t[i]);
		if (ret < 0)
			break;
		CHECK_EQ(t[i][0], i);
		got++;
	}
	CHECK(got >= 3);
	if (ret < 0) {
		CHECK_EQ(ret, -ENOMEM);
		CHECK_STR_HAS(img_last_error(), "cache: all ");
	}
	/* Earlier tables are still intact after the growth. */
	for (unsigned i = 0; i < got; i++) {
		CHECK_EQ(t[i][0], i);
		img_cache_put(c, t[i]);
	}
	CHECK_OK(img_cache_get(c, 63 * TS, (void **)&t[0]));
	CHECK_EQ(t[0][0], 63);
	img_cache_put(c, t[0]);
	img_cache_free(c);
	img_io_close(io);
}

static void test_errors(void)
{
	struct img_io *io = new_file();
	struct img_cache *c;
	uint8_t *t;
	uint64_t ops;

	CHECK_ERR(img_cache_new(io, 0, 4, &c), -EINVAL);
	CHECK_OK(img_cache_new(io, TS, 1, &c));
	/* A failed read leaves nothing cached. */
	img_io_faulty_arm(io, img_io_faulty_ops(io) + 1, EIO, false);
	CHECK_ERR(img_cache_get(c, 2 * TS, (void **)&t), -EIO);
	CHECK_OK(img_cache_get(c, 2 * TS, (void **)&t));
	CHECK_EQ(t[0], 2);
	t[1] = 1;
	img_cache_mark_dirty(c, t);
	img_cache_put(c, t);
	/* The eviction write fails: the miss fails, the table stays dirty. */
	img_io_faulty_arm(io, img_io_faulty_ops(io) + 1, ENOSPC, false);
	CHECK_ERR(img_cache_get(c, 4 * TS, (void **)&t), -ENOSPC);
	CHECK_EQ(file_byte(io, 2 * TS + 1), 0);
	ops = img_io_faulty_ops(io);
	CHECK_OK(img_cache_get(c, 2 * TS, (void **)&t));
	CHECK_EQ(img_io_faulty_ops(io), ops);
	CHECK_EQ(t[1], 1);
	img_cache_put(c, t);
	img_io_faulty_arm(io, img_io_faulty_ops(io) + 1, EIO, false);
	CHECK_ERR(img_cache_write_back(c), -EIO);
	CHECK_OK(img_cache_write_back(c));
	CHECK_EQ(file_byte(io, 2 * TS + 1), 1);
	img_cache_free(c);
	img_io_close(io);
}

/* Index of the first log entry from `from` matching kind (and offset for
 * writes), or -1. */
static long find_log(struct img_io *io, size_t from, int kind, uint64_t off)
{
	const struct img_io_log_entry *log;
	size_t n;

	img_io_faulty_log(io, &log, &n);
	for (size_t i = from; i < n; i++)
		if ((int)log[i].kind == kind &&
		    (kind != IMG_LOG_WRITE || log[i].file_off == off))
			return (long)i;
	return -1;
}

static size_t log_len(struct img_io *io)
{
	const struct img_io_log_entry *log;
	size_t n;

	img_io_faulty_log(io, &log, &n);
	return n;
}

static void test_dependency(void)
{
	struct img_io *io = new_file();
	struct img_cache *l2, *rc;
	uint8_t *t;
	size_t start;
	long w_rc, fl, w_l2;

	CHECK_OK(img_cache_new(io, TS, 2, &l2));
	CHECK_OK(img_cache_new(io, TS, 2, &rc));
	img_cache_set_dependency(l2, rc);

	/* Write-back: refcount block, flush, then the L2 table. */
	start = log_len(io);
	CHECK_OK(img_cache_get(rc, 1 * TS, (void **)&t));
	t[2] = 1;
	img_cache_mark_dirty(rc, t);
	img_cache_put(rc, t);
	CHECK_OK(img_cache_get(l2, 8 * TS, (void **)&t));
	t[2] = 2;
	img_cache_mark_dirty(l2, t);
	img_cache_put(l2, t);
	CHECK_OK(img_cache_write_back(l2));
	w_rc = find_log(io, start, IMG_LOG_WRITE, 1 * TS);
	fl = find_log(io, start, IMG_LOG_FLUSH, 0);
	w_l2 = find_log(io, start, IMG_LOG_WRITE, 8 * TS);
	CHECK(w_rc >= 0 && fl > w_rc && w_l2 > fl);
	CHECK_EQ(log_len(io), start + 3);

	/* The refcounts did not change since: no second flush. */
	start = log_len(io);
	CHECK_OK(img_cache_get(l2, 8 * TS, (void **)&t));
	t[3] = 3;
	img_cache_mark_dirty(l2, t);
	img_cache_put(l2, t);
	CHECK_OK(img_cache_write_back(l2));
	CHECK_EQ(log_len(io), start + 1);
	CHECK_EQ(find_log(io, start, IMG_LOG_FLUSH, 0), -1);

	/* Eviction of a dirty L2 table obeys the same order. */
	start = log_len(io);
	CHECK_OK(img_cache_get(rc, 2 * TS, (void **)&t));
	t[2] = 4;
	img_cache_mark_dirty(rc, t);
	img_cache_put(rc, t);
	CHECK_OK(img_cache_get(l2, 9 * TS, (void **)&t));
	t[2] = 5;
	img_cache_mark_dirty(l2, t);
	img_cache_put(l2, t);
	for (unsigned i = 20; i < 23; i++) {
		CHECK_OK(img_cache_get(l2, i * TS, (void **)&t));
		img_cache_put(l2, t);
	}
	w_rc = find_log(io, start, IMG_LOG_WRITE, 2 * TS);
	fl = find_log(io, start, IMG_LOG_FLUSH, 0);
	w_l2 = find_log(io, start, IMG_LOG_WRITE, 9 * TS);
	CHECK(w_rc >= 0 && fl > w_rc && w_l2 > fl);
	CHECK_EQ(file_byte(io, 9 * TS + 2), 5);
	CHECK_EQ(file_byte(io, 2 * TS + 2), 4);

	/* A failed dependency flush keeps the L2 table off the disk. */
	CHECK_OK(img_cache_get(rc, 3 * TS, (void **)&t));
	t[2] = 6;
	img_cache_mark_dirty(rc, t);
	img_cache_put(rc, t);
	CHECK_OK(img_cache_get(l2, 9 * TS, (void **)&t));
	t[2] = 7;
	img_cache_mark_dirty(l2, t);
	img_cache_put(l2, t);
	img_io_faulty_arm(io, img_io_faulty_ops(io) + 2, EIO, false);
	CHECK_ERR(img_cache_write_back(l2), -EIO);
	CHECK_EQ(file_byte(io, 3 * TS + 2), 6);
	CHECK_EQ(file_byte(io, 9 * TS + 2), 5);
	start = log_len(io);
	CHECK_OK(img_cache_write_back(l2));
	fl = find_log(io, start, IMG_LOG_FLUSH, 0);
	w_l2 = find_log(io, start, IMG_LOG_WRITE, 9 * TS);
	CHECK(fl >= 0 && w_l2 > fl);
	CHECK_EQ(file_byte(io, 9 * TS + 2), 7);

	img_cache_free(l2);
	img_cache_free(rc);
	img_io_close(io);
}

int main(void)
{
	test_hits_and_eviction();
	test_all_pinned();
	test_errors();
	test_dependency();
	return test_done();
}
