/* SPDX-License-Identifier: MIT */
/*
 * img compare: compare the guest-visible contents of two images as qemu-img
 * compare does. Ranges that read as zeroes in both images (per block status,
 * through their backing chains) are skipped; the rest is read in 2 MiB
 * chunks. A mismatch is reported at 512-byte granularity, like qemu. When
 * the sizes differ, the extra area of the larger image must read as zeroes
 * unless -s (strict) makes any size difference a mismatch. The chunks are
 * read ahead through the async engine (lib/pipeline.c) and compared in
 * order, so the mismatch reported is the first one even when a later chunk's
 * reads complete first.
 * Exit codes: 0 identical, 1 different, 2 error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CMP_CHUNK (2u << 20)
#define CMP_SECTOR 512u
/* Chunks read ahead: 8 reads of 2 MiB in flight. */
#define CMP_DEPTH 4

/* Offset of the first differing 512-byte sector in a and b, or len. */
static uint64_t first_mismatch(const uint8_t *a, const uint8_t *b, uint64_t len)
{
	uint64_t i;

	for (i = 0; i < len; i += CMP_SECTOR) {
		uint64_t n = len - i < CMP_SECTOR ? len - i : CMP_SECTOR;

		if (memcmp(a + i, b + i, n))
			return i;
	}
	return len;
}

/* Offset of the first 512-byte sector holding a non-zero byte, or len. */
static uint64_t first_nonzero(const uint8_t *a, uint64_t len)
{
	uint64_t i;

	for (i = 0; i < len; i++)
		if (a[i])
			return i - i % CMP_SECTOR;
	return len;
}

enum cmp_kind {
	CMP_SKIP, /* reads as zeroes in both */
	CMP_READ, /* read and compare */
	CMP_STRICT, /* -s: block status differs here */
};

struct cmp {
	struct img *img[2];
	const char *name[2];
	uint64_t off, end;
	bool tail; /* past the smaller image: only img[0] is read */
	bool strict, quiet, stop;
	struct cli_progress prog;
};

static int read_error(const char *name, const struct img_pipe_chunk *c, int err)
{
	img_pipe_error(c);
	return cli_fail(2, "Error while reading offset %" PRIu64 " of %s: %s",
			c->off, name, cli_errmsg(err));
}

/* The next range to look at, from block status (both images' but in the
 * tail), as the one-read-at-a-time loop of qemu-img compare. */
static int cmp_next(void *opaque, struct img_pipe_chunk *c)
{
	struct cmp *m = opaque;
	unsigned n = m->tail ? 1 : 2;
	struct img_extent e[2];
	uint64_t chunk = UINT64_MAX;

	if (m->stop || m->off >= m->end)
		return 0;
	c->off = m->off;
	for (unsigned i = 0; i < n; i++) {
		int r = img_block_status(m->img[i], m->off, m->end - m->off, 0,
					 &e[i]);

		if (r < 0) {
			c->kind = i;
			return r;
		}
		if (e[i].len < chunk)
			chunk = e[i].len;
	}
	if (chunk == 0 || chunk > m->end - m->off)
		chunk = m->end - m->off;
	if (m->strict && !m->tail &&
	    (e[0].flags & (IMG_EXT_DATA | IMG_EXT_ZERO)) !=
		    (e[1].flags & (IMG_EXT_DATA | IMG_EXT_ZERO))) {
		c->kind = CMP_STRICT;
		m->stop = true;
		return 1;
	}
	if ((e[0].flags & IMG_EXT_ZERO) &&
	    (n == 1 || (e[1].flags & IMG_EXT_ZERO))) {
		c->kind = CMP_SKIP;
	} else {
		c->kind = CMP_READ;
		if (chunk > CMP_CHUNK)
			chunk = CMP_CHUNK;
		c->n_reads = n;
		for (unsigned i = 0; i < n; i++)
			c->reads[i] = (struct img_pipe_read){ .img = m->img[i],
							      .off = m->off,
							      .len = chunk };
	}
	c->len = chunk;
	m->off += chunk;
	return 1;
}

/* In order: 0 to go on, 1 for a difference, 2 for an error. */
static int cmp_consume(void *opaque, struct img_pipe_chunk *c)
{
	struct cmp *m = opaque;
	uint64_t diff;

	if (c->ret < 0) {
		img_pipe_error(c);
		return cli_fail(2, "Sector allocation test failed for %s",
				m->name[c->kind]);
	}
	if (c->kind == CMP_STRICT) {
		if (!m->quiet)
			printf("Strict mode: Offset %" PRIu64
			       " block status mismatch!\n",
			       c->off);
		return 1;
	}
	for (unsigned i = 0; i < c->n_reads; i++)
		if (c->reads[i].ret < 0)
			return read_error(m->name[i], c, c->reads[i].ret);
	if (c->kind == CMP_READ) {
		diff = m->tail ? first_nonzero(c->reads[0].buf, c->len) :
				 first_mismatch(c->reads[0].buf,
						c->reads[1].buf, c->len);
		if (diff < c->len) {
			if (!m->quiet)
				printf("Content mismatch at offset %" PRIu64
				       "!\n",
				       c->off + diff);
			return 1;
		}
	}
	cli_progress_add(&m->prog, c->len);
	return 0;
}

static const struct img_pipe_ops cmp_ops = {
	.next = cmp_next,
	.consume = cmp_consume,
};

/* Compare [m->off, m->end): 0 same, 1 different, 2 error. */
static int cmp_run(struct cmp *m)
{
	int ret = img_pipe_run(&cmp_ops, m, CMP_CHUNK, CMP_DEPTH);

	if (ret < 0)
		return cli_fail(2, "%s", cli_errmsg(ret));
	return ret;
}

int cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt1 = NULL, *fmt2 = NULL, *name1, *name2;
	unsigned flags = IMG_OPEN_RDONLY | cli_untrusted();
	bool progress = false, quiet = false, strict = false;
	struct img *img1 = NULL, *img2 = NULL;
	uint64_t size1, size2, common;
	struct cmp m = { 0 };
	int c, ret = 2;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt1 = optarg;
			break;
		case 'F':
			fmt2 = optarg;
			break;
		case 'T':
			if (cli_parse_cache(optarg, &flags) < 0)
				return cli_fail(2,
						"Invalid source cache option: "
						"%s",
						optarg);
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 's':
			strict = true;
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (quiet)
		progress = false;
	if (optind != argc - 2)
		return cli_usage_error(1, "Expecting two image file names");
	name1 = argv[optind];
	name2 = argv[optind + 1];

	cli_progress_init(&m.prog, false, 0);
	if (cli_open(name1, fmt1, flags, IMG_IO_AUTO, &img1) < 0)
		goto out;
	if (cli_open(name2, fmt2, flags, IMG_IO_AUTO, &img2) < 0)
		goto out;
	size1 = img_size(img1);
	size2 = img_size(img2);
	cli_progress_init(&m.prog, progress, size1 > size2 ? size1 : size2);
	common = size1 < size2 ? size1 : size2;

	m.strict = strict;
	m.quiet = quiet;
	if (strict && size1 != size2) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		ret = 1;
		goto out;
	}

	m.img[0] = img1;
	m.img[1] = img2;
	m.name[0] = name1;
	m.name[1] = name2;
	m.end = common;
	ret = cmp_run(&m);
	if (ret)
		goto out;
	if (size1 != size2) {
		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		if (size2 > size1) {
			m.img[0] = img2;
			m.name[0] = name2;
		}
		m.off = common;
		m.end = size1 > size2 ? size1 : size2;
		m.tail = true;
		ret = cmp_run(&m);
		if (ret)
			goto out;
	}
	cli_progress_add(&m.prog, m.prog.total);
	if (!quiet)
		printf("Images are identical.\n");
	ret = 0;
out:
	cli_progress_end(&m.prog);
	img_close(img2);
	img_close(img1);
	return ret;
}
