/* SPDX-License-Identifier: MIT */
/*
 * The core's read and block status path for drivers with .map
 * (lib/request.c, lib/map-read.c), driven by a fake driver whose map
 * returns a scripted list of extents of every kind over mem backends: plain
 * data in two files, zeroes, unallocated ranges read from a backing image
 * (zeroes past its end), a slice of a compressed cluster and encrypted
 * sectors, read whole, in unaligned pieces and against the expected bytes;
 * the decompressed-cluster cache (one decompression for sequential reads of
 * a cluster, none kept across img_direct_drain); and bad maps, which must
 * fail with an error naming the guest offset, never crash: data past the
 * end of its file, a compressed stream that is garbage, out of bounds or
 * starts past the end, a wrong length, encryption without a cipher or with
 * the host offset in another place of its sector, and flags with nothing
 * to read.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "tap.h"

#define SIZE 0x10000u
#define CLUSTER 0x2000u

struct script {
	uint64_t off, len; /* guest range */
	struct img_map m; /* len and in_cluster are adjusted per call */
	bool second_io; /* m.io: the second file */
};

struct fake {
	struct script *s;
	size_t n;
	struct img_io *io2;
	unsigned maps;
};

static struct fake *F(struct img *img)
{
	return img_priv(img);
}

static int fake_map(struct img *img, uint64_t off, uint64_t len,
		    struct img_map *m)
{
	struct fake *f = F(img);

	f->maps++;
	for (size_t i = 0; i < f->n; i++) {
		const struct script *s = &f->s[i];
		uint64_t in = off - s->off;

		if (off < s->off || off >= s->off + s->len)
			continue;
		*m = s->m;
		if (s->second_io)
			m->io = f->io2;
		if (!s->m.len)
			m->len = img_min(len, s->len - in);
		if (m->flags & IMG_EXT_COMPRESSED)
			m->in_cluster += in;
		else
			m->file_off += in;
		return 0;
	}
	return img_error(-EIO, "fake: no extent at %#llx",
			 (unsigned long long)off);
}

static void fake_close(struct img *img)
{
}

static const struct img_driver map_driver = {
	.name = "fakemap",
	.priv_size = sizeof(struct fake),
	.close = fake_close,
	.map = fake_map,
};

static struct img *fake_image(uint64_t size, struct img_io *file)
{
	struct img *img = calloc(1, sizeof(*img));

	if (!img)
		abort();
	pthread_mutex_init(&img->lock, NULL);
	pthread_mutex_init(&img->direct_lock, NULL);
	pthread_cond_init(&img->direct_idle, NULL);
	img->drv = &map_driver;
	img->priv = calloc(1, sizeof(struct fake));
	img->filename = strdup("fake.img");
	if (!img->priv || !img->filename)
		abort();
	img->file = file;
	img->size = size;
	img->flags = IMG_OPEN_RDONLY;
	return img;
}

static void fake_free(struct img *img)
{
	if (!img)
		return;
	img_io_close(img->file);
	img_io_close(F(img)->io2);
	img_zcache_free(img);
	pthread_mutex_destroy(&img->lock);
	pthread_mutex_destroy(&img->direct_lock);
	pthread_cond_destroy(&img->direct_idle);
	free(img->filename);
	free(img->priv);
	free(img);
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static uint8_t want[SIZE];
static uint8_t cluster[CLUSTER];

/* The plain layer a backing image is: its file at the same offset. */
static struct script backing_script[] = {
	{ .off = 0,
	  .len = 0x2800,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			  IMG_EXT_OFFSET_VALID } },
};

/*
 * The layout, in guest order: data, zero, unallocated (the backing is
 * 0x2800 bytes: half of this reads zeroes), the second half of a compressed
 * cluster, encrypted sectors, data in another file, and data again whose
 * host range continues the first extent's (the core merges such reads).
 */
static struct script script[] = {
	{ .off = 0x0000,
	  .len = 0x1000,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			  IMG_EXT_OFFSET_VALID,
		 .file_off = 0x8000 } },
	{ .off = 0x1000,
	  .len = 0x1000,
	  .m = { .flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED } },
	{ .off = 0x2000, .len = 0x1000, .m = { .flags = 0 } },
	{ .off = 0x3000,
	  .len = 0x1000,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_COMPRESSED,
		 .file_off = 0x10000,
		 .codec = IMG_COMPRESS_DEFLATE_RAW,
		 .cluster_size = CLUSTER,
		 .in_cluster = 0x1000 } },
	{ .off = 0x4000,
	  .len = 0x1000,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_ENCRYPTED,
		 .file_off = 0x14000 } },
	{ .off = 0x5000,
	  .len = 0x1000,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			  IMG_EXT_OFFSET_VALID,
		 .file_off = 0x100 },
	  .second_io = true },
	{ .off = 0x6000,
	  .len = 0xa000,
	  .m = { .flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			  IMG_EXT_OFFSET_VALID,
		 .file_off = 0x9000 } },
};

static struct img_sector_cipher *sc;
static struct img_cipher cipher;

/* Build the host files and the expected guest bytes; NULL on failure. */
static struct img *build(struct img **backing_out)
{
	static uint8_t host[0x20000], host2[0x2000], bfile[0x2800];
	static const uint8_t key[16] = "0123456789abcdef";
	uint8_t *plain;
	struct img_io *io, *io2, *bio;
	struct img *img, *b;
	int clen;

	memset(host, 0, sizeof(host));
	fill(host + 0x8000, 0x1000, 1);
	fill(host + 0x9000, 0xa000, 7);
	fill(host2 + 0x100, 0x1000, 3);
	fill(bfile, sizeof(bfile), 5);
	fill(cluster, CLUSTER, 9);
	clen = img_compress(IMG_COMPRESS_DEFLATE_RAW, 0, cluster, CLUSTER,
			    host + 0x10000, 0x4000);
	CHECK(clen > 0);
	if (clen <= 0)
		return NULL;
	script[3].m.clen = (uint64_t)clen;

	/* Legacy sector encryption takes its IV from the guest sector. */
	CHECK_OK(img_sector_cipher_new("aes", "cbc-plain", key, sizeof(key),
				       &sc));
	if (!sc)
		return NULL;
	cipher.legacy = sc;
	script[4].m.cipher = &cipher;
	plain = host + 0x14000;
	fill(plain, 0x1000, 11);
	memcpy(want + 0x4000, plain, 0x1000);
	CHECK_OK(img_sector_cipher_run(sc, true, 0x4000 / 512, plain, 0x1000));

	memcpy(want, host + 0x8000, 0x1000);
	memset(want + 0x1000, 0, 0x1000);
	memcpy(want + 0x2000, bfile + 0x2000, 0x800);
	memset(want + 0x2800, 0, 0x800);
	memcpy(want + 0x3000, cluster + 0x1000, 0x1000);
	memcpy(want + 0x5000, host2 + 0x100, 0x1000);
	memcpy(want + 0x6000, host + 0x9000, 0xa000);

	if (img_io_mem_new(host, sizeof(host), &io) < 0 ||
	    img_io_mem_new(host2, sizeof(host2), &io2) < 0 ||
	    img_io_mem_new(bfile, sizeof(bfile), &bio) < 0)
		abort();
	/* Count the main file's operations (the cache test). */
	if (img_io_faulty_new(io, &io) < 0)
		abort();
	img = fake_image(SIZE, io);
	F(img)->s = script;
	F(img)->n = IMG_ARRAY_SIZE(script);
	F(img)->io2 = io2;
	b = fake_image(sizeof(bfile), bio);
	F(b)->s = backing_script;
	F(b)->n = 1;
	b->depth = 1;
	img->backing = b;
	*backing_out = b;
	return img;
}

static void test_reads(struct img *img)
{
	static uint8_t got[SIZE];

	memset(got, 0xee, sizeof(got));
	CHECK_OK(img_read(img, got, 0, SIZE));
	CHECK(!memcmp(got, want, SIZE));
	CHECK_EQ(atomic_load(&img->direct_inflight), 0);

	/* Unaligned pieces crossing every kind of extent. */
	for (uint64_t off = 0, len = 1; off < SIZE;
	     off += len, len = len * 3 % 1237 + 1) {
		len = img_min(len, SIZE - off);
		memset(got, 0xee, len);
		CHECK_OK(img_read(img, got, off, len));
		if (memcmp(got, want + off, len)) {
			CHECK(!"piece reads right");
			fprintf(stderr, "  at %#llx len %llu\n",
				(unsigned long long)off,
				(unsigned long long)len);
			break;
		}
	}
}

static void test_cache(struct img *img)
{
	uint8_t got[512];
	uint64_t ops;

	img_direct_drain(img);
	CHECK_OK(img_read(img, got, 0x3000, sizeof(got)));
	ops = img_io_faulty_ops(img->file);
	for (uint64_t off = 0x3200; off < 0x4000; off += sizeof(got)) {
		CHECK_OK(img_read(img, got, off, sizeof(got)));
		CHECK(!memcmp(got, want + off, sizeof(got)));
	}
	/* The cluster stayed decompressed: no read of the stream again. */
	CHECK_EQ(img_io_faulty_ops(img->file), ops);
	/* A host range may be freed after a drain: the cache is dropped. */
	img_direct_drain(img);
	CHECK_OK(img_read(img, got, 0x3000, sizeof(got)));
	CHECK(img_io_faulty_ops(img->file) > ops);
	CHECK(!memcmp(got, want + 0x3000, sizeof(got)));
}

static void test_status(struct img *img)
{
	struct img_extent ext;

	CHECK_OK(img_block_status(img, 0, SIZE, 0, &ext));
	CHECK_EQ(ext.len, 0x1000);
	CHECK_EQ(ext.flags,
		 IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID);
	CHECK_EQ(ext.file_off, 0x8000);
	CHECK(ext.file && !strcmp(ext.file, "fake.img"));
	CHECK_OK(img_block_status(img, 0x1800, SIZE - 0x1800, 0, &ext));
	CHECK_EQ(ext.len, 0x800);
	CHECK_EQ(ext.flags, IMG_EXT_ZERO | IMG_EXT_ALLOCATED);
	/* Unallocated: the backing's data, from depth 1. */
	CHECK_OK(img_block_status(img, 0x2000, SIZE - 0x2000, 0, &ext));
	CHECK_EQ(ext.depth, 1);
	CHECK_EQ(ext.len, 0x800);
	CHECK_EQ(ext.flags,
		 IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID);
	CHECK_OK(img_block_status(img, 0x2000, SIZE - 0x2000, IMG_BS_NO_CHAIN,
				  &ext));
	CHECK_EQ(ext.flags, 0);
	CHECK_OK(img_block_status(img, 0x3000, SIZE - 0x3000, 0, &ext));
	CHECK_EQ(ext.flags,
		 IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_COMPRESSED);
	CHECK_OK(img_block_status(img, 0x5000, SIZE - 0x5000, 0, &ext));
	CHECK_EQ(ext.file_off, 0x100);
}

/* Replace script entry i's map by m for one read at off; expect err with
 * msg in the message. */
static void bad(struct img *img, size_t i, struct img_map m, uint64_t off,
		uint64_t len, int err, const char *msg)
{
	struct img_map saved = script[i].m;
	uint8_t got[0x1000];

	script[i].m = m;
	img_direct_drain(img);
	img_clear_error();
	CHECK_ERR(img_read(img, got, off, len), err);
	CHECK_STR_HAS(img_last_error(), msg);
	CHECK_EQ(atomic_load(&img->direct_inflight), 0);
	script[i].m = saved;
}

static void test_bad_maps(struct img *img)
{
	const unsigned data = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			      IMG_EXT_OFFSET_VALID;
	const unsigned comp = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			      IMG_EXT_COMPRESSED;
	struct img_map m;

	/* Data whose host range runs past the end of the file. */
	m = (struct img_map){ .flags = data, .file_off = 0x1ff00 };
	bad(img, 0, m, 0x10, 0x100, -EIO,
	    "guest offset 0x100 maps to host offset 0x20000 past the end");
	/* A compressed stream of garbage (the encrypted sectors). */
	m = script[3].m;
	m.file_off = 0x14000;
	bad(img, 3, m, 0x3000, 0x10, -IMG_ECORRUPT,
	    "compressed cluster of guest offset 0x3000");
	/* Out of bounds: a slice past the cluster, a cluster too large. */
	m = script[3].m;
	m.in_cluster = CLUSTER - 0x10;
	/* (lib/backend.c refuses these before the read path sees them.) */
	bad(img, 3, m, 0x3000, 0x100, -EIO,
	    "map at offset 12288: compressed cluster of 8192 bytes does not "
	    "hold 256 bytes from 8176");
	m = script[3].m;
	m.cluster_size = IMG_MAX_DECOMPRESS_OUT + 512;
	bad(img, 3, m, 0x3000, 0x100, -EIO, "compressed cluster of 2097664");
	m = script[3].m;
	m.clen = 0;
	bad(img, 3, m, 0x3000, 0x100, -EIO, "compressed stream of 0 bytes");
	/* The stream starts past the end of the file. */
	m = (struct img_map){ .flags = comp,
			      .file_off = 0x30000,
			      .codec = IMG_COMPRESS_ZSTD,
			      .clen = 100,
			      .cluster_size = CLUSTER };
	bad(img, 3, m, 0x3000, 0x100, -EIO, "guest offset 0x3000");
	/* Encryption without a cipher, or with the sector split. */
	m = script[4].m;
	m.cipher = NULL;
	bad(img, 4, m, 0x4000, 0x100, -EIO, "encrypted without a cipher");
	m = script[4].m;
	m.file_off += 3;
	bad(img, 4, m, 0x4000, 0x100, -IMG_ECORRUPT, "another place");
	/* A length of 0 or more than asked, flags with nothing to read. */
	m = (struct img_map){ .len = 0x2000, .flags = data };
	bad(img, 0, m, 0, 0x1000, -EIO, "returned length 8192");
	m = (struct img_map){ .flags = IMG_EXT_ALLOCATED };
	bad(img, 0, m, 0x20, 0x10, -EIO, "guest offset 0x20");
	/* After all that, the image still reads right. */
	test_reads(img);
}

int main(void)
{
	struct img *b = NULL, *img = build(&b);

	if (img) {
		test_reads(img);
		test_cache(img);
		test_status(img);
		test_bad_maps(img);
	}
	fake_free(img);
	fake_free(b);
	img_sector_cipher_free(sc);
	return test_done();
}
