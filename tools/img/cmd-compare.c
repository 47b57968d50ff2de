/* SPDX-License-Identifier: MIT */
/*
 * img compare: compare the guest-visible contents of two images as qemu-img
 * compare does. Ranges that read as zeroes in both images (per block status,
 * through their backing chains) are skipped; the rest is read in 2 MiB
 * chunks. A mismatch is reported at 512-byte granularity, like qemu. When
 * the sizes differ, the extra area of the larger image must read as zeroes
 * unless -s (strict) makes any size difference a mismatch.
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

static int read_error(struct img *img, const char *name, uint64_t off, int err)
{
	(void)img;
	return cli_fail(2, "Error while reading offset %" PRIu64 " of %s: %s",
			off, name, cli_errmsg(err));
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
	uint8_t *buf1 = NULL, *buf2 = NULL;
	uint64_t size1, size2, common, off;
	struct cli_progress prog;
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

	cli_progress_init(&prog, false, 0);
	if (cli_open(name1, fmt1, flags, IMG_IO_AUTO, &img1) < 0)
		goto out;
	if (cli_open(name2, fmt2, flags, IMG_IO_AUTO, &img2) < 0)
		goto out;
	buf1 = malloc(CMP_CHUNK);
	buf2 = malloc(CMP_CHUNK);
	if (!buf1 || !buf2) {
		cli_fail(2, "out of memory");
		goto out;
	}
	size1 = img_size(img1);
	size2 = img_size(img2);
	cli_progress_init(&prog, progress, size1 > size2 ? size1 : size2);
	common = size1 < size2 ? size1 : size2;

	if (strict && size1 != size2) {
		if (!quiet)
			printf("Strict mode: Image size mismatch!\n");
		ret = 1;
		goto out;
	}

	for (off = 0; off < common;) {
		struct img_extent e1, e2;
		uint64_t chunk, diff;
		int r;

		img_clear_error();
		r = img_block_status(img1, off, common - off, 0, &e1);
		if (r < 0) {
			cli_fail(2, "Sector allocation test failed for %s",
				 name1);
			goto out;
		}
		r = img_block_status(img2, off, common - off, 0, &e2);
		if (r < 0) {
			cli_fail(2, "Sector allocation test failed for %s",
				 name2);
			goto out;
		}
		chunk = e1.len < e2.len ? e1.len : e2.len;
		if (chunk == 0 || chunk > common - off)
			chunk = common - off;
		if (strict &&
		    (e1.flags & (IMG_EXT_DATA | IMG_EXT_ZERO)) !=
			    (e2.flags & (IMG_EXT_DATA | IMG_EXT_ZERO))) {
			if (!quiet)
				printf("Strict mode: Offset %" PRIu64
				       " block status mismatch!\n",
				       off);
			ret = 1;
			goto out;
		}
		if ((e1.flags & IMG_EXT_ZERO) && (e2.flags & IMG_EXT_ZERO)) {
			off += chunk;
			cli_progress_add(&prog, chunk);
			continue;
		}
		if (chunk > CMP_CHUNK)
			chunk = CMP_CHUNK;
		r = img_read(img1, buf1, off, chunk);
		if (r < 0) {
			read_error(img1, name1, off, r);
			goto out;
		}
		r = img_read(img2, buf2, off, chunk);
		if (r < 0) {
			read_error(img2, name2, off, r);
			goto out;
		}
		diff = first_mismatch(buf1, buf2, chunk);
		if (diff < chunk) {
			if (!quiet)
				printf("Content mismatch at offset %" PRIu64
				       "!\n",
				       off + diff);
			ret = 1;
			goto out;
		}
		off += chunk;
		cli_progress_add(&prog, chunk);
	}

	if (size1 != size2) {
		struct img *over = size1 > size2 ? img1 : img2;
		const char *over_name = size1 > size2 ? name1 : name2;
		uint64_t over_size = size1 > size2 ? size1 : size2;

		if (!quiet)
			printf("Warning: Image size mismatch!\n");
		for (off = common; off < over_size;) {
			struct img_extent e;
			uint64_t chunk, nz;
			int r;

			img_clear_error();
			r = img_block_status(over, off, over_size - off, 0, &e);
			if (r < 0) {
				cli_fail(2,
					 "Sector allocation test failed for %s",
					 over_name);
				goto out;
			}
			chunk = e.len;
			if (chunk == 0 || chunk > over_size - off)
				chunk = over_size - off;
			if (e.flags & IMG_EXT_ZERO) {
				off += chunk;
				cli_progress_add(&prog, chunk);
				continue;
			}
			if (chunk > CMP_CHUNK)
				chunk = CMP_CHUNK;
			r = img_read(over, buf1, off, chunk);
			if (r < 0) {
				read_error(over, over_name, off, r);
				goto out;
			}
			nz = first_nonzero(buf1, chunk);
			if (nz < chunk) {
				if (!quiet)
					printf("Content mismatch at offset "
					       "%" PRIu64 "!\n",
					       off + nz);
				ret = 1;
				goto out;
			}
			off += chunk;
			cli_progress_add(&prog, chunk);
		}
	}
	cli_progress_add(&prog, prog.total);
	if (!quiet)
		printf("Images are identical.\n");
	ret = 0;
out:
	cli_progress_end(&prog);
	free(buf1);
	free(buf2);
	img_close(img2);
	img_close(img1);
	return ret;
}
