/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 driver: the input bytes become a mem backend
 * opened read-only as qcow2 without its backing chain; the target reads the
 * image (at most 64 MiB of it) in chunks, walks img_block_status over it and
 * runs img_check; then it opens a copy read-write, writes a few clusters,
 * zeroes, discards, flushes, closes and checks again. Any crash, leak or
 * unbounded time or memory is a bug in the driver: everything it allocates
 * from header fields must be capped.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define READ_CAP (64ull << 20)
#define CHUNK (1ull << 20)

/* Open a copy of the input (img_open_io owns the backend from here on). */
static int open_bytes(const uint8_t *data, size_t size, unsigned flags,
		      struct img **out)
{
	struct img_open_opts o = {
		.format = "qcow2",
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *io;

	if (img_io_mem_new(data, size, &io) < 0)
		return -1;
	return img_open_io(io, "fuzz.qcow2", &o, out);
}

static void read_and_map(struct img *img, uint8_t *buf)
{
	uint64_t end = img_min(img_size(img), READ_CAP);
	uint64_t off = 0;
	unsigned n = 0;

	for (uint64_t pos = 0; pos < end; pos += CHUNK)
		if (img_read(img, buf, pos, img_min(CHUNK, end - pos)) < 0)
			break;
	/* block_status: bounded number of calls, each must make progress. */
	while (off < end && n++ < 4096) {
		struct img_extent ext;

		if (img_block_status(img, off, end - off, 0, &ext) < 0)
			break;
		if (ext.len == 0 || ext.len > end - off)
			abort(); /* the core's contract: 1..len bytes */
		off += ext.len;
	}
}

static void check(struct img *img)
{
	struct img_check res;

	memset(&res, 0, sizeof(res));
	img_check(img, 0, &res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img *img;
	uint8_t *buf = malloc(CHUNK);
	uint64_t vsize, cs;

	if (!buf)
		return 0;
	if (open_bytes(data, size, IMG_OPEN_RDONLY, &img) >= 0) {
		read_and_map(img, buf);
		check(img);
		img_close(img);
	}

	/* Read-write on a copy (the mem backend copies data). */
	if (open_bytes(data, size, 0, &img) >= 0) {
		vsize = img_size(img);
		cs = img_granularity(img);
		if (cs == 0 || cs > CHUNK)
			cs = 65536;
		memset(buf, 0xa5, CHUNK);
		if (vsize) {
			uint64_t len = img_min(vsize, cs + 1000);
			uint64_t mid = vsize / 2;

			img_write(img, buf, 0, len, 0);
			img_write(img, buf, mid, img_min(len, vsize - mid), 0);
			img_write(img, buf, vsize - 1, 1, 0);
			img_zero(img, 0, img_min(vsize, 3 * cs),
				 IMG_ZERO_MAY_UNMAP);
			img_discard(img, mid, img_min(vsize - mid, 2 * cs));
			img_flush(img);
			img_read(img, buf, 0, img_min(vsize, CHUNK));
			check(img);
		}
		img_close(img);
	}
	free(buf);
	return 0;
}
