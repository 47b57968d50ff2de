/* SPDX-License-Identifier: MIT */
/*
 * Deterministic disk-like sample for `make bench`: a sparse raw file made of
 * extents of 64 KiB to 4 MiB (4 KiB-aligned) that are, by size, about 40%
 * holes (never written, so they stay holes in the file), 30% compressible
 * (text-like lines from a small vocabulary, with now and then an all-zero
 * 4 KiB block as real disks have) and 30% random bytes from xorshift64*.
 * The same arguments always give the same bytes.
 *
 * usage: gen-sample FILE [SIZE_MIB (default 2048)] [SEED]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096u
#define MAX_EXTENT (4u << 20)

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static const char *const words[] = {
	"the",	   "kernel", "block",	"device", "sector", "cluster",
	"image",   "write",  "read",	"cache",  "table",  "refcount",
	"backing", "file",   "offset",	"length", "guest",  "host",
	"qemu",	   "disk",   "error",	"return", "struct", "static",
	"int",	   "void",   "include", "define", "if",	    "else",
	"for",	   "while",  "0x1000",	"4096",	  "65536",  "usr/lib",
};

static void fill_random(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = rng();

		memcpy(buf + i, &v, 8);
	}
}

static void fill_text(uint8_t *buf, size_t len)
{
	size_t i = 0, col = 0;

	while (i < len) {
		const char *w =
			words[rng() % (sizeof(words) / sizeof(words[0]))];
		size_t n = strlen(w);

		for (size_t k = 0; k < n && i < len; k++)
			buf[i++] = (uint8_t)w[k];
		col += n + 1;
		if (i < len)
			buf[i++] = col > 72 ? '\n' : ' ';
		if (col > 72)
			col = 0;
	}
	/* about one block in 16 all zero */
	for (size_t b = 0; b + BLOCK <= len; b += BLOCK)
		if (rng() % 16 == 0)
			memset(buf + b, 0, BLOCK);
}

int main(int argc, char **argv)
{
	uint64_t size_mib = 2048, size, off = 0;
	uint64_t bytes[3] = { 0, 0, 0 };
	uint8_t *buf;
	int fd;

	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: gen-sample FILE [SIZE_MIB] [SEED]\n");
		return 2;
	}
	if (argc > 2)
		size_mib = strtoull(argv[2], NULL, 0);
	rng_state = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x1234567;
	if (!size_mib || !rng_state) {
		fprintf(stderr, "gen-sample: bad size or seed\n");
		return 2;
	}
	size = size_mib << 20;

	buf = malloc(MAX_EXTENT);
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (!buf || fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		fprintf(stderr, "gen-sample: %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	while (off < size) {
		uint64_t len = (16 + rng() % 1009) * BLOCK;
		unsigned kind =
			(unsigned)(rng() %
				   10); /* 0-3 hole, 4-6 text, 7-9 random */

		if (len > size - off)
			len = size - off;
		if (kind <= 3) {
			bytes[0] += len;
		} else {
			if (kind <= 6) {
				fill_text(buf, len);
				bytes[1] += len;
			} else {
				fill_random(buf, len);
				bytes[2] += len;
			}
			if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
				fprintf(stderr, "gen-sample: write: %s\n",
					strerror(errno));
				return 1;
			}
		}
		off += len;
	}
	if (close(fd) < 0) {
		fprintf(stderr, "gen-sample: close: %s\n", strerror(errno));
		return 1;
	}
	printf("sample %s: %" PRIu64 " MiB: holes %.1f%%, compressible %.1f%%, "
	       "random %.1f%%\n",
	       argv[1], size_mib, 100.0 * (double)bytes[0] / (double)size,
	       100.0 * (double)bytes[1] / (double)size,
	       100.0 * (double)bytes[2] / (double)size);
	free(buf);
	return 0;
}
