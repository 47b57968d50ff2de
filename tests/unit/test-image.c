/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the core's request choke point and image object, using a
 * fake driver attached by hand to an image on the mem backend: request
 * splitting, the defaults for NULL ops (zero, discard, flush, block status),
 * read-only formats, FUA, the image lock for drivers that are not
 * thread-safe, the flush error img_close returns, and probing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

struct fake {
	unsigned reads, writes, zeroes, discards, flushes;
	bool says_data; /* block status: data (else zeroes) */
	uint64_t max_len;
	int flush_ret;
	uint64_t bs_len; /* what block_status claims; 0 = the asked length */
	atomic_int in_flight;
	atomic_int overlap;
};

static struct fake *F(struct img *img)
{
	return img_priv(img);
}

static void fake_close(struct img *img)
{
}

static void note_len(struct img *img, uint64_t len)
{
	if (len > F(img)->max_len)
		F(img)->max_len = len;
}

/* Every range reads as zeroes; counts the calls and watches for overlap. */
static int fake_map(struct img *img, uint64_t off, uint64_t len,
		    struct img_map *m)
{
	struct fake *f = F(img);

	if (atomic_fetch_add(&f->in_flight, 1) > 0)
		atomic_store(&f->overlap, 1);
	f->reads++;
	note_len(img, len);
	/* Give other threads a chance to enter; correctness does not depend
	 * on it. */
	for (volatile int i = 0; i < 20000; i++)
		;
	if (m->write) {
		/* Writes go to the same offset of the (mem) file. */
		f->reads--;
		f->writes++;
		m->len = len;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->file_off = off;
	} else if (m->want_zero && f->says_data) {
		m->len = len;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->file_off = off;
	} else {
		m->len = f->bs_len ? f->bs_len : len;
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
	}
	atomic_fetch_sub(&f->in_flight, 1);
	return 0;
}

/* A format that cannot write. */
static int ro_map(struct img *img, uint64_t off, uint64_t len,
		  struct img_map *m)
{
	if (m->write)
		return img_error(-ENOTSUP, "fakero: format is read-only");
	return fake_map(img, off, len, m);
}

static int fake_zero(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags)
{
	if (flags & IMG_ZERO_DISCARD)
		F(img)->discards++;
	else
		F(img)->zeroes++;
	note_len(img, len);
	return 0;
}

static int fake_flush(struct img *img)
{
	F(img)->flushes++;
	return F(img)->flush_ret;
}

static const struct img_driver full_driver = {
	.name = "fake",
	.priv_size = sizeof(struct fake),
	.close = fake_close,
	.map = fake_map,
	.zero = fake_zero,
	.flush = fake_flush,
};

/* Only the required ops: the core's defaults apply. */
static const struct img_driver min_driver = {
	.name = "fakemin",
	.priv_size = sizeof(struct fake),
	.close = fake_close,
	.map = fake_map,
};

static const struct img_driver ro_driver = {
	.name = "fakero",
	.priv_size = sizeof(struct fake),
	.close = fake_close,
	.map = ro_map,
};

static struct img *fake_image(const struct img_driver *drv, uint64_t size,
			      unsigned flags)
{
	struct img *img = calloc(1, sizeof(*img));

	if (!img)
		abort();
	pthread_mutex_init(&img->lock, NULL);
	img->drv = drv;
	img->priv = calloc(1, drv->priv_size);
	if (!img->priv || img_io_mem_new(NULL, 0, &img->file) < 0)
		abort();
	img->size = size;
	img->flags = flags;
	return img;
}

static void test_split(void)
{
	const uint64_t size = 2 * IMG_MAX_REQUEST + (6 << 20);
	struct img *img = fake_image(&full_driver, size, 0);
	uint8_t *buf = malloc(size);

	CHECK(buf);
	if (!buf)
		return;
	memset(buf, 0x11, size);
	CHECK_OK(img_read(img, buf, 0, size)); /* map says: zeroes */
	CHECK_EQ(F(img)->reads, 3);
	CHECK_EQ(F(img)->max_len, IMG_MAX_REQUEST);
	CHECK(buf[0] == 0 && buf[size - 1] == 0);
	CHECK_OK(img_write(img, buf, 1, size - 1, 0));
	CHECK_EQ(F(img)->writes, 3);
	CHECK_OK(img_zero(img, 0, size, 0));
	CHECK_EQ(F(img)->zeroes, 3);
	CHECK_OK(img_discard(img, 0, size));
	CHECK_EQ(F(img)->discards, 3);
	CHECK_EQ(F(img)->max_len, IMG_MAX_REQUEST);

	/* FUA: the write, then a flush. */
	F(img)->flushes = 0;
	CHECK_OK(img_write(img, "x", 0, 1, IMG_FUA));
	CHECK_EQ(F(img)->flushes, 1);
	CHECK_OK(img_zero(img, 0, 1, IMG_FUA));
	CHECK_EQ(F(img)->flushes, 2);

	/* Zero-length requests never reach the driver. */
	F(img)->reads = F(img)->writes = 0;
	CHECK_OK(img_read(img, NULL, size, 0));
	CHECK_OK(img_write(img, NULL, 0, 0, 0));
	CHECK_EQ(F(img)->reads + F(img)->writes, 0);

	/* Bounds, with overflow. */
	CHECK_ERR(img_read(img, buf, size, 1), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "read at offset");
	CHECK_STR_HAS(img_last_error(), "past the end of the image (size");
	CHECK_ERR(img_write(img, "x", UINT64_MAX, 1, 0), -EINVAL);
	CHECK_ERR(img_read(img, buf, 1, UINT64_MAX), -EINVAL);
	CHECK_ERR(img_discard(img, UINT64_MAX - 1, 4), -EINVAL);

	free(buf);

	/* Block status: a bad driver answer is an error, not a crash. */
	struct img_extent ext;
	F(img)->bs_len = 4096;
	CHECK_OK(img_block_status(img, 100, 65536, 0, &ext));
	CHECK_EQ(ext.off, 100);
	CHECK_EQ(ext.len, 4096);
	CHECK_EQ(ext.depth, 0);
	F(img)->bs_len = 65537;
	CHECK_ERR(img_block_status(img, 100, 65536, 0, &ext), -EIO);
	CHECK_ERR(img_block_status(img, 100, 0, 0, &ext), -EINVAL);

	/* img_close returns the final flush's error. */
	F(img)->flush_ret = -EIO;
	CHECK_ERR(img_close(img), -EIO);
}

static void test_defaults(void)
{
	struct img *img = fake_image(&min_driver, 1 << 20, 0);
	struct img_extent ext;
	const uint8_t *data;
	size_t data_len;
	uint8_t ones[65536];

	/* No .zero: the core writes zeroes over what was there, and nothing
	 * where the layer already reads as zeroes. */
	memset(ones, 0xff, sizeof(ones));
	CHECK_OK(img_write(img, ones, 0, sizeof(ones), 0));
	F(img)->writes = 0;
	F(img)->says_data = true;
	CHECK_OK(img_zero(img, 0, 65536, 0));
	CHECK_EQ(F(img)->writes, 1);
	img_io_mem_data(img->file, &data, &data_len);
	CHECK(data_len == 65536 && img_is_zero(data, data_len));
	F(img)->says_data = false;
	CHECK_OK(img_zero(img, 0, 65536, 0));
	CHECK_EQ(F(img)->writes, 1);
	CHECK_ERR(img_zero(img, 0, 65536, IMG_ZERO_FAST), -ENOTSUP);
	CHECK_OK(img_discard(img, 0, 65536));
	CHECK_OK(img_flush(img));
	CHECK_OK(img_block_status(img, 512, 1000, 0, &ext));
	CHECK_EQ(ext.off, 512);
	CHECK_EQ(ext.len, 1000);
	CHECK_EQ(ext.flags, IMG_EXT_ZERO | IMG_EXT_ALLOCATED); /* the map's */
	CHECK_ERR(img_resize(img, 2 << 20, 0, IMG_PREALLOC_OFF), -ENOTSUP);
	CHECK_ERR(img_set_backing(img, NULL, NULL), -ENOTSUP);
	struct img_check chk = { 0 };
	CHECK_ERR(img_check(img, 0, &chk), -ENOTSUP);
	struct img_info info;
	CHECK_OK(img_info(img, &info));
	CHECK(!strcmp(info.format, "fakemin"));
	CHECK_EQ(info.virtual_size, 1 << 20);
	CHECK_EQ(img_granularity(img), 65536);
	CHECK_OK(img_close(img));

	img = fake_image(&ro_driver, 1 << 20, 0);
	CHECK_ERR(img_write(img, "x", 0, 1, 0), -ENOTSUP);
	CHECK_STR_HAS(img_last_error(), "fakero: format is read-only");
	/* Zeroes over zeroes need no write; data would. */
	CHECK_OK(img_zero(img, 0, 1, 0));
	F(img)->says_data = true;
	CHECK_ERR(img_zero(img, 0, 1, 0), -ENOTSUP);
	/* Nothing to deallocate: a discard does nothing. */
	CHECK_OK(img_discard(img, 0, 1));
	CHECK_OK(img_close(img));

	/* Read-only open: no writes, and close does not flush. */
	img = fake_image(&full_driver, 1 << 20, IMG_OPEN_RDONLY);
	CHECK_ERR(img_write(img, "x", 0, 1, 0), -EROFS);
	CHECK_ERR(img_zero(img, 0, 1, 0), -EROFS);
	CHECK_ERR(img_discard(img, 0, 1), -EROFS);
	CHECK_EQ(F(img)->writes + F(img)->zeroes + F(img)->discards, 0);
	F(img)->flush_ret = -EIO;
	CHECK_OK(img_close(img));
}

static void *reader(void *arg)
{
	struct img *img = arg;
	uint8_t buf[512];

	for (int i = 0; i < 200; i++)
		if (img_read(img, buf, 0, sizeof(buf)) < 0)
			return arg;
	return NULL;
}

static void test_lock(void)
{
	struct img *img = fake_image(&full_driver, 1 << 20, 0);
	pthread_t t[4];
	void *res;
	bool failed = false;

	for (int i = 0; i < 4; i++)
		CHECK(pthread_create(&t[i], NULL, reader, img) == 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], &res);
		failed |= res != NULL;
	}
	CHECK(!failed);
	CHECK_EQ(F(img)->reads, 800);
	/* The driver is not thread-safe: calls never overlapped. */
	CHECK_EQ(atomic_load(&F(img)->overlap), 0);
	CHECK_OK(img_close(img));
}

static void test_probe(void)
{
	const char *const *f;
	bool has_qcow2 = false;
	struct img *img;
	char cmd[1024];

	for (f = img_formats(); *f; f++)
		has_qcow2 |= !strcmp(*f, "qcow2");
	if (!has_qcow2) {
		test_note("qcow2 not built yet: probing of qcow2 not tested");
		return;
	}
	snprintf(cmd, sizeof(cmd),
		 "qemu-img create -q -f qcow2 '%s' 1M >/dev/null 2>&1",
		 test_path("p.qcow2"));
	if (test_sh("%s", cmd) != 0) {
		test_note("qemu-img not usable: probing of qcow2 not tested");
		return;
	}
	CHECK_OK(img_open(test_path("p.qcow2"), NULL, &img));
	if (img) {
		CHECK(!strcmp(img_format(img), "qcow2"));
		CHECK_EQ(img_size(img), 1 << 20);
		img_close(img);
	}
	/* Forcing raw opens the same file as raw. */
	struct img_open_opts oo = { .format = "raw", .flags = IMG_OPEN_RDONLY };
	CHECK_OK(img_open(test_path("p.qcow2"), &oo, &img));
	if (img) {
		CHECK(!strcmp(img_format(img), "raw"));
		img_close(img);
	}
}

int main(void)
{
	test_split();
	test_defaults();
	test_lock();
	test_probe();
	return test_done();
}
