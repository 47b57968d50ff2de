/* SPDX-License-Identifier: MIT */
/*
 * The body the VHD, VHDX, VDI and VMDK fuzz targets share: the input bytes
 * become a mem backend opened as the given format without a backing chain;
 * the target reads the image (at most 64 MiB of it), walks block status over
 * it and runs check; then it opens a copy read-write, writes, zeroes,
 * flushes, reads back and checks again. Everything a driver allocates from
 * header fields must be capped by the input's size.
 */
#ifndef FUZZ_FORMAT_H
#define FUZZ_FORMAT_H

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define FUZZ_READ_CAP (64ull << 20)
#define FUZZ_CHUNK (1ull << 20)

static int fuzz_open_bytes(const uint8_t *data, size_t size, const char *fmt,
			   unsigned flags, struct img **out)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags | IMG_OPEN_NO_BACKING,
	};
	struct img_io *io;

	if (img_io_mem_new(data, size, &io) < 0)
		return -1;
	return img_open_io(io, "fuzz.img", &o, out);
}

static void fuzz_read_and_map(struct img *img, uint8_t *buf)
{
	uint64_t end = img_min(img_size(img), FUZZ_READ_CAP);
	uint64_t off = 0;
	unsigned n = 0;

	for (uint64_t pos = 0; pos < end; pos += FUZZ_CHUNK)
		if (img_read(img, buf, pos, img_min(FUZZ_CHUNK, end - pos)) < 0)
			break;
	while (off < end && n++ < 4096) {
		struct img_extent ext;

		if (img_block_status(img, off, end - off, 0, &ext) < 0)
			break;
		if (ext.len == 0 || ext.len > end - off)
			abort();
		off += ext.len;
	}
}

static void fuzz_check(struct img *img)
{
	struct img_check res;

	memset(&res, 0, sizeof(res));
	img_check(img, 0, &res);
}

static int fuzz_format(const uint8_t *data, size_t size, const char *fmt)
{
	uint8_t *buf = malloc(FUZZ_CHUNK);
	struct img *img;

	if (!buf)
		return 0;
	if (fuzz_open_bytes(data, size, fmt, IMG_OPEN_RDONLY, &img) >= 0) {
		fuzz_read_and_map(img, buf);
		fuzz_check(img);
		img_close(img);
	}
	if (fuzz_open_bytes(data, size, fmt, 0, &img) >= 0) {
		uint64_t vsize = img_size(img);

		memset(buf, 0xa5, FUZZ_CHUNK);
		if (vsize) {
			uint64_t len = img_min(vsize, 70000);
			uint64_t mid = vsize / 2;

			img_write(img, buf, 0, len, 0);
			img_write(img, buf, mid, img_min(len, vsize - mid), 0);
			img_write(img, buf, vsize - 1, 1, 0);
			img_zero(img, 0, img_min(vsize, 3000),
				 IMG_ZERO_MAY_UNMAP);
			img_flush(img);
			img_read(img, buf, 0, img_min(vsize, FUZZ_CHUNK));
			fuzz_check(img);
		}
		img_close(img);
	}
	free(buf);
	return 0;
}

#endif
