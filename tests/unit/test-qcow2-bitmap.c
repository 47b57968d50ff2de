/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps of the qcow2 driver, on the mem and faulty
 * backends: random writes, zeroes and discards mark the enabled bitmaps as a
 * per-granule model says (checked after reopen), clear/enable/disable/merge/
 * remove, resize, bitmaps left in use by a "crash" (reported in use, unusable, still
 * removable), a stale extension (autoclear bit clear), crash replay of every
 * prefix of the recorded host writes (each opens, checks without corruption,
 * and a bitmap not in use holds every write of the last completed flush),
 * and a table of invalid directories that open must refuse cleanly.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define SIZE (8ull << 20)
#define EXT_BITMAPS 0x23852875u

/* A model of one bitmap: one byte per granule. */
struct model {
	const char *name;
	uint64_t gran;
	bool enabled;
	uint8_t *bits;
};

static void model_mark(struct model *m, uint64_t off, uint64_t len)
{
	if (!m->enabled || !len)
		return;
	for (uint64_t g = off / m->gran; g <= (off + len - 1) / m->gran; g++)
		m->bits[g] = 1;
}

/* Compare a bitmap with the model; superset: only require model bits. */
static bool model_matches(struct img *img, const struct model *m, bool superset)
{
	uint64_t off = 0;

	while (off < SIZE) {
		uint64_t run;
		bool dirty;
		int ret = img_bitmap_dirty(img, m->name, off, SIZE - off,
					   &dirty, &run);

		if (ret < 0 || run == 0 || run > SIZE - off) {
			test_note("%s: dirty query at %llu: %d %s", m->name,
				  (unsigned long long)off, ret,
				  img_last_error());
			return false;
		}
		for (uint64_t o = off; o < off + run; o += m->gran) {
			bool want = m->bits[o / m->gran];

			if (superset ? (want && !dirty) : (want != dirty)) {
				test_note("%s: granule at %llu is %d, model %d",
					  m->name, (unsigned long long)o, dirty,
					  want);
				return false;
			}
		}
		off += run;
	}
	return true;
}

static void check_clean(struct img *img, const char *what)
{
	struct img_check res;

	CHECK_OK(qt_check(img, &res, what));
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(res.leaks, 0);
}

/* The bitmaps extension payload and directory in a raw image. */
static bool find_dir(const uint8_t *b, size_t len, uint64_t *ext, uint64_t *dir)
{
	uint64_t off = img_be32(b + 100);

	while (off + 8 <= len && off < 65536) {
		uint32_t type = img_be32(b + off), l = img_be32(b + off + 4);

		if (type == 0)
			return false;
		if (type == EXT_BITMAPS) {
			*ext = off + 8;
			*dir = img_be64(b + off + 8 + 16);
			return *dir < len;
		}
		off += 8 + img_align_up(l, 8);
	}
	return false;
}

static void test_tracking(const char *opts)
{
	struct model m[3] = {
		{ "b0", 512, true, NULL },
		{ "b1", 65536, false, NULL },
		{ "b2", 0, true, NULL },
	};
	struct qt_rng rng = { qt_seed(42) };
	struct img_bitmap_info *l = NULL;
	struct img_io *mem;
	struct img *img;
	uint8_t *buf = malloc(200000);
	size_t n = 0;

	test_note("tracking, %s", opts);
	CHECK_OK(qt_create_mem(opts, SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "b0", 512, false));
	CHECK_OK(img_bitmap_add(img, "b1", 65536, true));
	CHECK_OK(img_bitmap_add(img, "b2", 0, false));
	CHECK_ERR(img_bitmap_add(img, "b2", 0, false), -EEXIST);
	CHECK_ERR(img_bitmap_add(img, "b3", 1000, false), -EINVAL);
	CHECK_ERR(img_bitmap_add(img, "", 0, false), -EINVAL);
	CHECK_OK(img_bitmap_list(img, &l, &n));
	CHECK_EQ(n, 3);
	if (n == 3) {
		m[2].gran = l[2].granularity;
		CHECK_EQ(l[0].flags, IMG_BITMAP_AUTO);
		CHECK_EQ(l[1].flags, 0);
		CHECK_EQ(l[1].granularity, 65536);
	}
	img_bitmap_list_free(l, n);
	if (!m[2].gran)
		m[2].gran = 65536;
	for (int i = 0; i < 3; i++)
		m[i].bits = calloc(SIZE / m[i].gran + 1, 1);

	for (int i = 0; i < 60 && buf; i++) {
		uint64_t len = 1 + qt_below(&rng, 150000);
		uint64_t off = qt_below(&rng, SIZE - len);
		unsigned op = (unsigned)qt_below(&rng, 10);

		if (op < 6) {
			qt_fill(&rng, buf, len);
			CHECK_OK(img_write(img, buf, off, len, 0));
		} else if (op < 8) {
			CHECK_OK(img_zero(img, off, len,
					  op == 7 ? IMG_ZERO_MAY_UNMAP : 0));
		} else {
			CHECK_OK(img_discard(img, off, len));
		}
		for (int k = 0; k < 3; k++)
			model_mark(&m[k], off, len);
		if (i % 9 == 8)
			CHECK_OK(img_flush(img));
		if (i == 30) {
			CHECK_OK(img_bitmap_clear(img, "b2"));
			memset(m[2].bits, 0, SIZE / m[2].gran + 1);
		}
		if (i == 40) {
			CHECK_OK(img_bitmap_enable(img, "b2", false));
			m[2].enabled = false;
			CHECK_OK(img_bitmap_enable(img, "b1", true));
			m[1].enabled = true;
		}
	}
	/* Live queries see unflushed marks. */
	for (int k = 0; k < 3; k++)
		CHECK(model_matches(img, &m[k], false));
	CHECK_OK(img_close(img));

	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	for (int k = 0; k < 3; k++)
		CHECK(model_matches(img, &m[k], false));
	CHECK_OK(img_bitmap_list(img, &l, &n));
	CHECK_EQ(n, 3);
	for (size_t k = 0; k < n; k++)
		CHECK(!(l[k].flags & IMG_BITMAP_IN_USE));
	img_bitmap_list_free(l, n);
	CHECK_ERR(img_bitmap_clear(img, "b0"), -EROFS);
	check_clean(img, "# ro: ");
	img_close(img);

	/* Merge b0 (512) into b1 (64k), then remove b0. */
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_merge(img, "b1", img, "b0"));
	for (uint64_t g = 0; g < SIZE / 512; g++)
		if (m[0].bits[g])
			m[1].bits[g * 512 / 65536] = 1;
	CHECK(model_matches(img, &m[1], false));
	CHECK_ERR(img_bitmap_merge(img, "b1", img, "nope"), -ENOENT);
	CHECK_OK(img_bitmap_remove(img, "b0"));
	CHECK_ERR(img_bitmap_remove(img, "b0"), -ENOENT);
	CHECK_OK(img_close(img));
	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	CHECK(model_matches(img, &m[1], false));
	CHECK_ERR(img_bitmap_dirty(img, "b0", 0, 1, &(bool){ 0 },
				   &(uint64_t){ 0 }),
		  -ENOENT);
	check_clean(img, "# merged: ");
	img_close(img);

	/* Removing every bitmap drops the extension and the autoclear bit. */
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_remove(img, "b1"));
	CHECK_OK(img_bitmap_remove(img, "b2"));
	CHECK_OK(img_close(img));
	{
		const uint8_t *d;
		size_t len;
		uint64_t ext, dir;

		img_io_mem_data(mem, &d, &len);
		CHECK(!find_dir(d, len, &ext, &dir));
		CHECK_EQ(img_be64(d + QT_H_AUTOCLEAR) & 1, 0);
	}
	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	check_clean(img, "# none: ");
	img_close(img);
	if (qt_have_qemu_img()) {
		CHECK_OK(qt_save_mem(mem, test_path("tracking.qcow2")));
		CHECK_EQ(qt_qemu_check(test_path("tracking.qcow2")), 0);
	}
	for (int k = 0; k < 3; k++)
		free(m[k].bits);
	free(buf);
	img_io_close(mem);
}

/* A write, then the file as a crash would leave it (in_use set). */
static void test_in_use(void)
{
	struct img_bitmap_info *l = NULL;
	const uint8_t *d;
	uint8_t *copy;
	struct img_io *mem;
	struct img *img, *crashed;
	uint8_t buf[4096] = { 1 };
	size_t n = 0, len;
	bool dirty;
	uint64_t run;

	test_note("in use");
	CHECK_OK(qt_create_mem("cluster_size=4096", SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "on", 0, false));
	CHECK_OK(img_bitmap_add(img, "off", 0, true));
	CHECK_OK(img_write(img, buf, 8192, sizeof(buf), 0));
	img_io_mem_data(mem, &d, &len);
	copy = malloc(len);
	memcpy(copy, d, len);
	CHECK_OK(img_close(img));

	CHECK_OK(qt_open_bytes(copy, len, 0, &crashed));
	CHECK_OK(img_bitmap_list(crashed, &l, &n));
	CHECK_EQ(n, 2);
	if (n == 2) {
		CHECK_EQ(l[0].flags, IMG_BITMAP_IN_USE | IMG_BITMAP_AUTO);
		CHECK_EQ(l[1].flags, 0);
	}
	img_bitmap_list_free(l, n);
	CHECK_ERR(img_bitmap_dirty(crashed, "on", 0, 512, &dirty, &run),
		  -EINVAL);
	CHECK_STR_HAS(img_last_error(), "inconsistent");
	CHECK_ERR(img_bitmap_clear(crashed, "on"), -EINVAL);
	CHECK_ERR(img_bitmap_enable(crashed, "on", false), -EINVAL);
	CHECK_ERR(img_bitmap_merge(crashed, "off", crashed, "on"), -EINVAL);
	CHECK_ERR(img_bitmap_add(crashed, "on", 0, false), -EEXIST);
	/* Writes leave it alone and do not fail. */
	CHECK_OK(img_write(crashed, buf, 0, sizeof(buf), 0));
	CHECK_OK(img_bitmap_remove(crashed, "on"));
	CHECK_OK(img_bitmap_dirty(crashed, "off", 0, SIZE, &dirty, &run));
	CHECK(!dirty && run == SIZE);
	check_clean(crashed, "# removed: ");
	img_close(crashed);

	/* The clean copy: tracked, no in_use. */
	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	CHECK_OK(img_bitmap_dirty(img, "on", 0, SIZE, &dirty, &run));
	CHECK(!dirty && run == 8192);
	CHECK_OK(img_bitmap_dirty(img, "on", 8192, SIZE - 8192, &dirty, &run));
	CHECK(dirty && run == 4096);
	img_close(img);
	free(copy);
	img_io_close(mem);
}

/* Without the autoclear bit the bitmaps are ignored and then dropped. */
static void test_stale(void)
{
	struct img_bitmap_info *l = NULL;
	const uint8_t *d;
	uint8_t *copy;
	struct img_io *mem;
	struct img *img;
	struct img_check res;
	size_t n = 9, len;

	test_note("stale extension");
	CHECK_OK(qt_create_mem("cluster_size=4096", SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "b", 0, false));
	CHECK_OK(img_close(img));
	img_io_mem_data(mem, &d, &len);
	copy = malloc(len);
	memcpy(copy, d, len);
	img_put_be64(copy + QT_H_AUTOCLEAR, 0);
	CHECK_OK(qt_open_bytes(copy, len, IMG_OPEN_RDONLY, &img));
	CHECK_OK(img_bitmap_list(img, &l, &n));
	CHECK_EQ(n, 0);
	img_bitmap_list_free(l, n);
	/* Its clusters are leaks now, as qemu-img check says too. */
	CHECK_OK(qt_check(img, &res, NULL));
	CHECK_EQ(res.corruptions, 0);
	CHECK(res.leaks > 0);
	img_close(img);
	CHECK_OK(qt_open_bytes(copy, len, 0, &img));
	CHECK_OK(img_bitmap_add(img, "b", 0, false));
	CHECK_OK(img_bitmap_list(img, &l, &n));
	CHECK_EQ(n, 1);
	img_bitmap_list_free(l, n);
	img_close(img);
	free(copy);
	img_io_close(mem);
}

/* Resize keeps the marks inside the new size; new space is clean. */
static void test_resize(void)
{
	struct img_io *mem;
	struct img *img;
	uint8_t buf[512] = { 7 };
	uint64_t run;
	bool dirty;

	test_note("resize");
	CHECK_OK(qt_create_mem("cluster_size=4096", SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "r", 4096, false));
	CHECK_OK(img_write(img, buf, 4096, 1, 0));
	CHECK_OK(img_write(img, buf, SIZE - 1, 1, 0));
	CHECK_OK(img_resize(img, 2 * SIZE, 0, IMG_PREALLOC_OFF));
	CHECK_OK(img_bitmap_dirty(img, "r", SIZE - 4096, SIZE + 4096, &dirty,
				  &run));
	CHECK(dirty && run == 4096);
	CHECK_OK(img_bitmap_dirty(img, "r", SIZE, SIZE, &dirty, &run));
	CHECK(!dirty && run == SIZE);
	CHECK_OK(img_write(img, buf, 2 * SIZE - 512, 512, 0));
	CHECK_OK(img_close(img));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_dirty(img, "r", 2 * SIZE - 4096, 4096, &dirty,
				  &run));
	CHECK(dirty && run == 4096);
	check_clean(img, "# grown: ");
	CHECK_OK(img_resize(img, 6144, IMG_RESIZE_SHRINK, IMG_PREALLOC_OFF));
	CHECK_OK(img_bitmap_dirty(img, "r", 0, 6144, &dirty, &run));
	CHECK(!dirty && run == 4096);
	CHECK_OK(img_bitmap_dirty(img, "r", 4096, 6144 - 4096, &dirty, &run));
	CHECK(dirty && run == 6144 - 4096);
	CHECK_OK(img_close(img));
	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	CHECK_OK(img_bitmap_dirty(img, "r", 0, 6144, &dirty, &run));
	CHECK(!dirty && run == 4096);
	check_clean(img, "# shrunk: ");
	img_close(img);
	img_io_close(mem);
}

/* ---- crash replay ---- */

static void test_crash(void)
{
	struct qt_rng rng = { qt_seed(7) };
	struct model m = { "c", 4096, true, NULL };
	uint8_t *snaps[8] = { NULL };
	size_t flush_pos[8] = { 0 };
	unsigned nf = 0;
	const struct img_io_log_entry *log;
	const uint8_t *d;
	uint8_t *init, buf[20000];
	size_t n_log, init_len;
	struct img_io *mem, *faulty;
	struct img *img;
	unsigned long checked = 0, bad = 0;

	test_note("crash replay");
	m.bits = calloc(SIZE / m.gran, 1);
	CHECK_OK(qt_create_mem("cluster_size=4096", SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "c", 4096, false));
	CHECK_OK(img_bitmap_add(img, "d", 65536, true));
	CHECK_OK(img_close(img));
	img_io_mem_data(mem, &d, &init_len);
	init = malloc(init_len);
	memcpy(init, d, init_len);

	CHECK_OK(img_io_faulty_new(mem, &faulty));
	CHECK_OK(qt_open_borrowed(faulty, 0, &img));
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 5; i++) {
			uint64_t len = 1 + qt_below(&rng, sizeof(buf));
			uint64_t off = qt_below(&rng, SIZE - len);

			qt_fill(&rng, buf, len);
			CHECK_OK(img_write(img, buf, off, len, 0));
			model_mark(&m, off, len);
		}
		CHECK_OK(img_flush(img));
		img_io_faulty_log(faulty, &log, &n_log);
		snaps[nf] = malloc(SIZE / m.gran);
		memcpy(snaps[nf], m.bits, SIZE / m.gran);
		flush_pos[nf++] = n_log;
	}
	CHECK_OK(img_write(img, buf, 0, 100, 0));
	CHECK_OK(img_close(img));
	img_io_faulty_log(faulty, &log, &n_log);

	for (size_t p = 0; p <= n_log; p++) {
		struct img_io *r;
		struct img_bitmap_info *l = NULL;
		struct img_check res;
		size_t n = 0;
		struct model want = m;
		int f = -1;

		if (img_io_mem_new(init, init_len, &r) < 0 ||
		    img_io_log_apply(r, log, p) < 0) {
			bad++;
			continue;
		}
		checked++;
		if (qt_open_borrowed(r, IMG_OPEN_RDONLY, &img) < 0) {
			test_note("prefix %zu: open: %s", p, img_last_error());
			bad++;
			img_io_close(r);
			continue;
		}
		if (qt_check(img, &res, NULL) < 0 || res.corruptions)
			bad++;
		for (unsigned k = 0; k < nf; k++)
			if (flush_pos[k] <= p)
				f = (int)k;
		if (img_bitmap_list(img, &l, &n) == 0 && n == 2 &&
		    !(l[0].flags & IMG_BITMAP_IN_USE) && f >= 0) {
			want.bits = snaps[f];
			if (!model_matches(img, &want, true)) {
				test_note("prefix %zu lost marks of flush %d",
					  p, f);
				bad++;
			}
		} else if (n != 2) {
			bad++;
		}
		img_bitmap_list_free(l, n);
		img_close(img);
		img_io_close(r);
	}
	test_note("%lu prefixes checked", checked);
	CHECK_EQ(bad, 0);
	CHECK(checked > 10);
	img_io_close(faulty);
	for (unsigned k = 0; k < nf; k++)
		free(snaps[k]);
	free(m.bits);
	free(init);
}

/* ---- invalid directories ---- */

enum where { W_EXT, W_DIR0, W_DIR, W_TABLE, W_HDR };

struct bad {
	const char *name;
	enum where where;
	uint32_t off;
	unsigned width;
	uint64_t val;
	int err;
};

static const struct bad bads[] = {
	{ "nb_bitmaps 0", W_EXT, 0, 4, 0, -IMG_ECORRUPT },
	{ "nb_bitmaps 65536", W_EXT, 0, 4, 65536, -IMG_ECORRUPT },
	{ "nb_bitmaps 3 (2 entries)", W_EXT, 0, 4, 3, -IMG_ECORRUPT },
	{ "nb_bitmaps 1 (2 entries)", W_EXT, 0, 4, 1, -IMG_ECORRUPT },
	{ "reserved32", W_EXT, 4, 4, 1, -IMG_ECORRUPT },
	{ "directory size 0", W_EXT, 8, 8, 0, -IMG_ECORRUPT },
	{ "directory size 64M+1", W_EXT, 8, 8, (64ull << 20) + 1,
	  -IMG_ECORRUPT },
	{ "directory size 8", W_EXT, 8, 8, 8, -IMG_ECORRUPT },
	{ "directory size past EOF", W_EXT, 8, 8, 1ull << 40, -IMG_ECORRUPT },
	{ "directory offset unaligned", W_EXT, 16, 8, 4096 + 8, -IMG_ECORRUPT },
	{ "directory offset 0", W_EXT, 16, 8, 0, -IMG_ECORRUPT },
	{ "directory offset past EOF", W_EXT, 16, 8, 1ull << 50,
	  -IMG_ECORRUPT },
	{ "table offset unaligned", W_DIR, 0, 8, 4097, -IMG_ECORRUPT },
	{ "table offset 0", W_DIR, 0, 8, 0, -IMG_ECORRUPT },
	{ "table offset past EOF", W_DIR, 0, 8, 1ull << 40, -IMG_ECORRUPT },
	{ "table size 0", W_DIR, 8, 4, 0, -IMG_ECORRUPT },
	{ "table size 2", W_DIR, 8, 4, 2, -IMG_ECORRUPT },
	{ "table size huge", W_DIR, 8, 4, 0x8000001, -IMG_ECORRUPT },
	{ "reserved flag bit 3", W_DIR, 12, 4, 1u << 3, -IMG_ECORRUPT },
	{ "reserved flag bit 31", W_DIR, 12, 4, 1u << 31, -IMG_ECORRUPT },
	{ "type 0", W_DIR, 16, 1, 0, -IMG_ECORRUPT },
	{ "type 2", W_DIR, 16, 1, 2, -IMG_ECORRUPT },
	{ "granularity_bits 8", W_DIR, 17, 1, 8, -ENOTSUP },
	{ "granularity_bits 32", W_DIR, 17, 1, 32, -ENOTSUP },
	{ "granularity_bits 63", W_DIR, 17, 1, 63, -ENOTSUP },
	{ "name_size 0", W_DIR, 18, 2, 0, -IMG_ECORRUPT },
	{ "name_size past directory", W_DIR, 18, 2, 61440, -IMG_ECORRUPT },
	{ "name with NUL", W_DIR, 24, 1, 0, -IMG_ECORRUPT },
	{ "extra_data_size 8 (past directory)", W_DIR, 20, 4, 8,
	  -IMG_ECORRUPT },
	{ "extra_data_size 7", W_DIR0, 20, 4, 7, -ENOTSUP },
	{ "extra_data_size huge", W_DIR, 20, 4, 0xffffffff, -IMG_ECORRUPT },
	{ "duplicate name", W_DIR, 24, 1, 'y', -IMG_ECORRUPT },
	{ "table entry reserved bit 1", W_TABLE, 0, 8, 2, -IMG_ECORRUPT },
	{ "table entry reserved bit 63", W_TABLE, 0, 8, 1ull << 63,
	  -IMG_ECORRUPT },
	{ "table entry offset and all-ones", W_TABLE, 0, 8, 8192 | 1,
	  -IMG_ECORRUPT },
	{ "table entry unaligned", W_TABLE, 0, 8, 8192 + 512, -IMG_ECORRUPT },
	{ "table entry past EOF", W_TABLE, 0, 8, 1ull << 40, -IMG_ECORRUPT },
	{ "no autoclear bit: ignored", W_HDR, QT_H_AUTOCLEAR, 8, 0, 0 },
	{ "in_use: table not read", W_DIR, 12, 4, 3, 0 },
	{ "extra_data_compatible flag", W_DIR, 12, 4, 6, 0 },
	{ "table entry all-ones", W_TABLE, 0, 8, 1, 0 },
};

static void put(uint8_t *p, unsigned width, uint64_t v)
{
	if (width == 1)
		p[0] = (uint8_t)v;
	else if (width == 2)
		img_put_be16(p, (uint16_t)v);
	else if (width == 4)
		img_put_be32(p, (uint32_t)v);
	else
		img_put_be64(p, v);
}

static void test_invalid(void)
{
	struct img_io *mem;
	struct img *img;
	const uint8_t *d;
	uint8_t *good;
	size_t len;
	uint64_t ext = 0, dir = 0;

	test_note("invalid directories");
	CHECK_OK(qt_create_mem("cluster_size=4096", SIZE, NULL, NULL, &mem));
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	/* "x" then "y": 32-byte entries; the second is the one patched. */
	CHECK_OK(img_bitmap_add(img, "y", 65536, false));
	CHECK_OK(img_bitmap_add(img, "x", 65536, false));
	CHECK_OK(img_write(img, "data", 0, 4, 0));
	CHECK_OK(img_close(img));
	img_io_mem_data(mem, &d, &len);
	good = malloc(len);
	memcpy(good, d, len);
	CHECK(find_dir(good, len, &ext, &dir));

	for (size_t i = 0; i < IMG_ARRAY_SIZE(bads); i++) {
		const struct bad *b = &bads[i];
		uint8_t *c = malloc(len);
		uint64_t at;
		int ret;

		memcpy(c, good, len);
		switch (b->where) {
		case W_EXT:
			at = ext + b->off;
			break;
		case W_DIR0:
			at = dir + b->off;
			break;
		case W_DIR:
			at = dir + 32 + b->off;
			break;
		case W_TABLE:
			at = img_be64(c + dir + 32);
			at += b->off;
			break;
		default:
			at = b->off;
			break;
		}
		if (at + b->width > len) {
			CHECK(!"patch outside the image");
			free(c);
			continue;
		}
		put(c + at, b->width, b->val);
		img_clear_error();
		ret = qt_open_bytes(c, len, IMG_OPEN_RDONLY, &img);
		if (ret != b->err)
			test_note("%s: open returned %d: %s", b->name, ret,
				  img_last_error());
		CHECK_EQ(ret, b->err);
		if (ret < 0) {
			CHECK_STR_HAS(img_last_error(), "qcow2: ");
		} else {
			bool dirty;
			uint64_t run;

			/* Usable ones answer queries without crashing. */
			(void)img_bitmap_dirty(img, "x", 0, SIZE, &dirty, &run);
			img_close(img);
			/* And survive a read-write open with writes. */
			if (qt_open_bytes(c, len, 0, &img) == 0) {
				CHECK_OK(img_write(img, "zz", 70000, 2, 0));
				CHECK_OK(img_close(img));
			}
		}
		free(c);
	}
	free(good);
	img_io_close(mem);
}

int main(void)
{
	if (!qt_have_qcow2())
		test_skip("no qcow2 driver");
	test_tracking("cluster_size=512");
	test_tracking("cluster_size=65536,lazy_refcounts=on");
	test_in_use();
	test_stale();
	test_resize();
	test_crash();
	test_invalid();
	return test_done();
}
