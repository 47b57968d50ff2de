/* SPDX-License-Identifier: MIT */
/*
 * Compression: the codec of lib/compress.c (round trips for raw deflate,
 * zlib-wrapped deflate and zstd, -ENOSPC when data does not shrink, trailing
 * bytes ignored, short or invalid streams refused, never a byte written past
 * the output), the qcow2 compressed cluster descriptor decoding (the spec's
 * bit layout for every cluster size, invalid descriptors refused), compressed
 * writes on mem images (read back, partial writes, zeroes and discards over
 * compressed clusters, refcounts checked clean after each step and after a
 * reopen) and crash replay of a workload that overwrites compressed
 * clusters: every prefix of its host writes must check without corruption
 * and hold what the last completed flush covered.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/qcow2/qcow2.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define GUARD 64

static void fill_text(uint8_t *p, size_t len, unsigned seed)
{
	static const char words[] = "qcow2 compressed cluster zstd deflate ";

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)
			words[(i * 7 + seed + i / 97) % (sizeof(words) - 1)];
}

static void test_codec_one(enum img_compress_type type, const char *name)
{
	size_t n = 65536;
	uint8_t *src = malloc(n), *c = malloc(n + GUARD),
		*d = malloc(n + GUARD);
	struct qt_rng rng = { 42 };
	int clen;

	printf("# codec %s\n", name);
	fill_text(src, n, 3);
	memset(c, 0xee, n + GUARD);
	clen = img_compress(type, 0, src, n, c, n - 1);
	CHECK(clen > 0 && clen < (int)n / 4);
	for (size_t i = n - 1; i < n + GUARD; i++)
		if (c[i] != 0xee) {
			CHECK(!"compress wrote past dst_size");
			break;
		}
	/* Trailing bytes after the stream (the next cluster's) are fine. */
	memset(c + clen, 0x5a, 700);
	memset(d, 0xee, n + GUARD);
	CHECK_OK(img_decompress(type, c, (size_t)clen + 700, d, n));
	CHECK(memcmp(d, src, n) == 0);
	CHECK(d[n] == 0xee && d[n + GUARD - 1] == 0xee);
	/* Exactly the stream. */
	CHECK_OK(img_decompress(type, c, (size_t)clen, d, n));
	CHECK(memcmp(d, src, n) == 0);
	/* A shorter output buffer stops there, without overrun. */
	memset(d, 0xee, n + GUARD);
	CHECK_OK(img_decompress(type, c, (size_t)clen, d, 1000));
	CHECK(memcmp(d, src, 1000) == 0 && d[1000] == 0xee);
	/* The stream cut short: the cluster cannot be filled. */
	CHECK_EQ(img_decompress(type, c, (size_t)clen / 2, d, n),
		 -IMG_ECORRUPT);
	/* Asking for more than the stream holds. */
	CHECK_EQ(img_decompress(type, c, (size_t)clen, d, n + 1),
		 -IMG_ECORRUPT);
	/* Garbage. */
	qt_fill(&rng, c, 4096);
	memset(d, 0xee, n + GUARD);
	CHECK_EQ(img_decompress(type, c, 4096, d, n), -IMG_ECORRUPT);
	CHECK(d[n] == 0xee);
	/* Random data does not shrink. */
	qt_fill(&rng, src, n);
	CHECK_EQ(img_compress(type, 0, src, n, c, n - 1), -ENOSPC);
	/* Levels. */
	fill_text(src, n, 5);
	CHECK(img_compress(type, 1, src, n, c, n) > 0);
	CHECK(img_compress(type, 9, src, n, c, n) > 0);
	CHECK_EQ(img_compress(type, 99, src, n, c, n), -EINVAL);
	free(src);
	free(c);
	free(d);
}

static void test_codec(void)
{
	test_codec_one(IMG_COMPRESS_DEFLATE_RAW, "raw deflate");
	test_codec_one(IMG_COMPRESS_DEFLATE_ZLIB, "zlib deflate");
	test_codec_one(IMG_COMPRESS_ZSTD, "zstd");
	CHECK_EQ(img_compress((enum img_compress_type)7, 0, "a", 1,
			      (char[16]){ 0 }, 16),
		 -EINVAL);
}

static void test_descriptor(void)
{
	uint64_t off, len;

	printf("# descriptors\n");
	for (unsigned cb = 9; cb <= 21; cb++) {
		unsigned x = 62 - (cb - 8);
		uint64_t cs = 1ull << cb, l2e;

		/* 0x34 into a sector past the header, 1 extra sector. */
		l2e = QCOW2_OFLAG_COMPRESSED | 1ull << x | (4 * cs + 0x34);
		CHECK_OK(qcow2_compressed_decode(cb, l2e, &off, &len));
		CHECK_EQ(off, 4 * cs + 0x34);
		CHECK_EQ(len, 2 * 512 - 0x34);
		/* The sector count field ends right below bit 62. */
		CHECK_EQ(x + (cb - 8), 62);
		/* The largest sector count the field holds: 2 clusters. */
		l2e = QCOW2_OFLAG_COMPRESSED | ((cs >> 9) - 1) << x | cs;
		CHECK_OK(qcow2_compressed_decode(cb, l2e, &off, &len));
		CHECK_EQ(len, (cs >> 9) * 512);
		/* COPIED (bit 63) is not part of the descriptor. */
		CHECK_OK(qcow2_compressed_decode(cb, l2e | QCOW2_OFLAG_COPIED,
						 &off, &len));
		CHECK_EQ(off, cs);
		/* Not compressed. */
		CHECK_EQ(qcow2_compressed_decode(cb, cs, &off, &len), -EINVAL);
		/* Inside the header cluster. */
		CHECK_EQ(qcow2_compressed_decode(
				 cb, QCOW2_OFLAG_COMPRESSED | 100, &off, &len),
			 -IMG_ECORRUPT);
		/* Past the largest host offset. */
		l2e = QCOW2_OFLAG_COMPRESSED | ((1ull << x) - 1);
		if (((1ull << x) - 1) + 512 > QCOW2_L2E_OFFSET_MASK + 1)
			CHECK_EQ(qcow2_compressed_decode(cb, l2e, &off, &len),
				 -IMG_ECORRUPT);
	}
	/* 64 KiB clusters: the layout of the spec's example bits. */
	CHECK_OK(qcow2_compressed_decode(
		16, QCOW2_OFLAG_COMPRESSED | 1ull << 54 | 0x50123, &off, &len));
	CHECK_EQ(off, 0x50123);
	CHECK_EQ(len, 2 * 512 - 0x123);
	CHECK_EQ(qcow2_compressed_decode(8, QCOW2_OFLAG_COMPRESSED | 4096, &off,
					 &len),
		 -EINVAL);
}

/* Write cluster idx of img compressed from data (cluster_size bytes). */
static int put_compressed(struct img *img, uint64_t idx, const uint8_t *data)
{
	enum img_compress_type type;
	uint64_t cs;
	uint8_t *c;
	int ret, clen;

	ret = img_compress_params(img, &type, &cs);
	if (ret < 0)
		return ret;
	c = malloc(cs);
	if (!c)
		return -ENOMEM;
	clen = img_compress(type, 0, data, cs, c, cs - 1);
	if (clen < 0) {
		ret = clen;
	} else {
		struct img_compressed v = { idx * cs, c, (size_t)clen };

		ret = img_write_compressed(img, &v, 1);
	}
	free(c);
	return ret;
}

static void expect_clean(struct img *img, const char *what)
{
	struct img_check res;

	memset(&res, 0, sizeof(res));
	CHECK_OK(qt_check(img, &res, what));
	if (res.corruptions || res.leaks)
		printf("# %s: %" PRIu64 " corruptions, %" PRIu64 " leaks\n",
		       what, res.corruptions, res.leaks);
	CHECK(res.corruptions == 0 && res.leaks == 0);
}

static void test_image(const char *opts, uint64_t size)
{
	uint64_t cs;
	enum img_compress_type type;
	struct img_io *mem;
	struct img *img;
	uint8_t *ref, *buf;
	struct img_info info;
	bool have = false;

	printf("# image %s\n", opts);
	if (qt_create_mem(opts, size, NULL, NULL, &mem) < 0) {
		CHECK(!"create");
		return;
	}
	ref = calloc(1, size);
	buf = malloc(size);
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_compress_params(img, &type, &cs));
	/* Every other cluster of the first 48 compressed, text patterns. */
	for (uint64_t i = 0; i < 48; i += 2) {
		fill_text(ref + i * cs, cs, (unsigned)i);
		CHECK_OK(put_compressed(img, i, ref + i * cs));
	}
	/* A plain write next to them. */
	memset(ref + 1 * cs + 10, 0x77, 100);
	CHECK_OK(img_write(img, ref + 1 * cs + 10, 1 * cs + 10, 100, 0));
	CHECK_OK(img_read(img, buf, 0, size));
	CHECK(memcmp(buf, ref, size) == 0);
	expect_clean(img, "after compressed writes");
	memset(&info, 0, sizeof(info));
	CHECK_OK(img_info(img, &info));
	for (size_t i = 0; i < info.n_fields; i++)
		if (!strcmp(info.fields[i].key, "compressed-clusters")) {
			CHECK_EQ(info.fields[i].u64, 24);
			have = true;
		}
	CHECK(have);

	/* Misuse: unaligned, too long. */
	{
		struct img_compressed bad[] = { { 100, buf, 10 },
						{ cs, buf, cs },
						{ size, buf, 10 } };

		CHECK_EQ(img_write_compressed(img, &bad[0], 1), -EINVAL);
		CHECK_EQ(img_write_compressed(img, &bad[1], 1), -EINVAL);
		CHECK_EQ(img_write_compressed(img, &bad[2], 1), -EINVAL);
	}

	/* Partial write over a compressed cluster: copy-on-write. */
	memset(ref + 4 * cs + 5, 0x11, 33);
	CHECK_OK(img_write(img, ref + 4 * cs + 5, 4 * cs + 5, 33, 0));
	/* Across two compressed clusters. */
	memset(ref + 7 * cs - 3, 0x22, cs);
	CHECK_OK(img_write(img, ref + 7 * cs - 3, 7 * cs - 3, cs, 0));
	/* Zero part of one, all of another, discard a third. */
	memset(ref + 10 * cs + 1, 0, 700);
	CHECK_OK(img_zero(img, 10 * cs + 1, 700, IMG_ZERO_MAY_UNMAP));
	memset(ref + 12 * cs, 0, cs);
	CHECK_OK(img_zero(img, 12 * cs, cs, IMG_ZERO_MAY_UNMAP));
	memset(ref + 14 * cs, 0, cs);
	CHECK_OK(img_discard(img, 14 * cs, cs));
	/* Compressed over compressed, and over a normal cluster. */
	fill_text(ref + 16 * cs, cs, 99);
	CHECK_OK(put_compressed(img, 16, ref + 16 * cs));
	fill_text(ref + 1 * cs, cs, 98);
	CHECK_OK(put_compressed(img, 1, ref + 1 * cs));
	CHECK_OK(img_read(img, buf, 0, size));
	CHECK(memcmp(buf, ref, size) == 0);
	CHECK_OK(img_flush(img));
	expect_clean(img, "after overwrites");
	CHECK_OK(img_close(img));

	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	CHECK_OK(img_read(img, buf, 0, size));
	CHECK(memcmp(buf, ref, size) == 0);
	expect_clean(img, "after reopen");
	{
		struct img_extent ext;

		CHECK_OK(img_block_status(img, 2 * cs, cs, 0, &ext));
		CHECK(ext.flags & IMG_EXT_COMPRESSED);
		CHECK_EQ(ext.len, cs);
	}
	img_close(img);
	img_io_close(mem);
	free(ref);
	free(buf);
}

/* Compressed writes mark enabled dirty bitmaps, as plain writes do. */
static void test_bitmap(void)
{
	uint64_t size = 1ull << 20, cs = 65536, run;
	uint8_t *data = malloc(cs);
	struct img_io *mem;
	struct img *img;
	bool dirty;

	printf("# dirty bitmaps\n");
	if (qt_create_mem("cluster_size=64k", size - 1000, NULL, NULL, &mem) <
	    0) {
		CHECK(!"create");
		return;
	}
	CHECK_OK(qt_open_borrowed(mem, 0, &img));
	CHECK_OK(img_bitmap_add(img, "on", 4096, false));
	CHECK_OK(img_bitmap_add(img, "off", 4096, true));
	fill_text(data, cs, 3);
	CHECK_OK(put_compressed(img, 2, data));
	/* The last, partial cluster of the image. */
	CHECK_OK(put_compressed(img, size / cs - 1, data));
	CHECK_OK(img_bitmap_dirty(img, "on", 0, size - 1000, &dirty, &run));
	CHECK(!dirty && run == 2 * cs);
	CHECK_OK(img_bitmap_dirty(img, "on", 2 * cs, size - 1000 - 2 * cs,
				  &dirty, &run));
	CHECK(dirty && run == cs);
	CHECK_OK(img_bitmap_dirty(img, "on", size - cs, cs - 1000, &dirty,
				  &run));
	CHECK(dirty && run == cs - 1000);
	CHECK_OK(img_bitmap_dirty(img, "off", 0, size - 1000, &dirty, &run));
	CHECK(!dirty && run == size - 1000);
	CHECK_OK(img_flush(img));
	CHECK_OK(img_close(img));
	/* Still there after reopen. */
	CHECK_OK(qt_open_borrowed(mem, IMG_OPEN_RDONLY, &img));
	CHECK_OK(img_bitmap_dirty(img, "on", 2 * cs, cs, &dirty, &run));
	CHECK(dirty && run == cs);
	img_close(img);
	img_io_close(mem);
	free(data);
}

/* Crash replay: compressed writes, flush, overwrites, flush. */
static void test_crash(void)
{
	uint64_t size = 1ull << 20, cs = 4096;
	struct img_io *mem, *b, *faulty;
	const struct img_io_log_entry *log;
	uint8_t *init, *snap[3], *buf = malloc(size);
	size_t init_len, n_log, pos[3] = { 0 };
	const uint8_t *d;
	struct img *img;
	unsigned bad = 0;

	printf("# crash replay\n");
	if (qt_create_mem("cluster_size=4k,compression_type=zstd", size, NULL,
			  NULL, &mem) < 0) {
		CHECK(!"create");
		return;
	}
	img_io_mem_data(mem, &d, &init_len);
	init = malloc(init_len);
	memcpy(init, d, init_len);
	for (int i = 0; i < 3; i++)
		snap[i] = calloc(1, size);
	CHECK_OK(qt_io_borrow(mem, &b));
	CHECK_OK(img_io_faulty_new(b, &faulty));
	CHECK_OK(qt_open_borrowed(faulty, 0, &img));
	for (uint64_t i = 0; i < 64; i++) {
		fill_text(snap[1] + i * cs, cs, (unsigned)i);
		CHECK_OK(put_compressed(img, i, snap[1] + i * cs));
	}
	CHECK_OK(img_flush(img));
	img_io_faulty_log(faulty, &log, &n_log);
	pos[1] = n_log;
	memcpy(snap[2], snap[1], size);
	for (uint64_t i = 1; i < 64; i += 5) {
		memset(snap[2] + i * cs + 100, (int)i, 200);
		CHECK_OK(img_write(img, snap[2] + i * cs + 100, i * cs + 100,
				   200, 0));
	}
	memset(snap[2] + 30 * cs, 0, 3 * cs);
	CHECK_OK(img_zero(img, 30 * cs, 3 * cs, IMG_ZERO_MAY_UNMAP));
	fill_text(snap[2] + 40 * cs, cs, 1234);
	CHECK_OK(put_compressed(img, 40, snap[2] + 40 * cs));
	CHECK_OK(img_close(img));
	img_io_faulty_log(faulty, &log, &n_log);
	pos[2] = n_log;

	for (size_t k = 0; k <= n_log && bad < 5; k++) {
		struct img_io *m;
		struct img_check res;
		unsigned f = k >= pos[2] ? 2 : k >= pos[1] ? 1 : 0;
		bool ok = true;

		if (img_io_mem_new(init, init_len, &m) < 0 ||
		    img_io_log_apply(m, log, k) < 0 ||
		    qt_open_borrowed(m, IMG_OPEN_RDONLY, &img) < 0) {
			printf("# crash after %zu: cannot open: %s\n", k,
			       img_last_error());
			CHECK(!"open after crash");
			bad++;
			img_io_close(m);
			continue;
		}
		memset(&res, 0, sizeof(res));
		if (qt_check(img, &res, NULL) < 0 || res.corruptions)
			ok = false;
		if (img_read(img, buf, 0, size) < 0)
			ok = false;
		/* Flushed data; in epoch 1 only what epoch 2 leaves alone
		 * must still be there. */
		for (uint64_t c = 0; ok && f && c < size / cs; c++) {
			bool touched = f == 1 && memcmp(snap[1] + c * cs,
							snap[2] + c * cs, cs);

			if (!touched &&
			    memcmp(buf + c * cs, snap[f] + c * cs, cs))
				ok = false;
			if (touched &&
			    memcmp(buf + c * cs, snap[1] + c * cs, cs) &&
			    memcmp(buf + c * cs, snap[2] + c * cs, cs))
				ok = false;
		}
		if (!ok) {
			printf("# crash after %zu of %zu (epoch %u): bad image\n",
			       k, n_log, f);
			bad++;
		}
		CHECK(ok);
		img_close(img);
		img_io_close(m);
	}
	img_io_close(faulty);
	img_io_close(mem);
	for (int i = 0; i < 3; i++)
		free(snap[i]);
	free(init);
	free(buf);
}

int main(void)
{
	test_codec();
	test_descriptor();
	if (!qt_have_qcow2())
		test_skip("no qcow2 driver");
	test_image("cluster_size=4k", 4ull << 20);
	test_image("cluster_size=64k,compression_type=zstd", 4ull << 20);
	test_image("cluster_size=64k,extended_l2=on,compression_type=zstd",
		   4ull << 20);
	test_image("cluster_size=2M", 100ull << 20);
	test_image("compat=0.10,cluster_size=512", 1ull << 20);
	test_image("cluster_size=4k,refcount_bits=1", 1ull << 20);
	test_bitmap();
	test_crash();
	return test_done();
}
