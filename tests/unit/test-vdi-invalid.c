/* SPDX-License-Identifier: MIT */
/*
 * Invalid VDI images: each case takes a consistent dynamic image made by the
 * driver (two blocks written), corrupts one field of the header or one
 * block map entry, and expects a clean error naming the problem: at open
 * for header fields and out-of-range entries, at check for shared blocks and
 * a wrong allocated-block count (QEMU counts both as corruptions).
 */
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "tap.h"

#define ECOR IMG_ECORRUPT
#define MIB (1ull << 20)

struct vcase {
	const char *name;
	uint32_t off; /* header or block map byte offset */
	unsigned width; /* 4 or 8; 0: truncate the file to off */
	uint64_t val;
	bool at_open;
	int err;
	const char *msg;
};

static const struct vcase cases[] = {
	{ "signature", 0x40, 4, 0xbeda1070, true, ECOR, "signature" },
	{ "version 1.2", 0x44, 4, 0x00010002, true, ENOTSUP, "version 1.2" },
	{ "image type", 0x4c, 4, 3, true, ENOTSUP, "image type 3" },
	{ "sector size", 0x168, 4, 4096, true, ENOTSUP, "sector size" },
	{ "block size", 0x178, 4, 2 * MIB, true, ENOTSUP, "block size" },
	{ "block extra", 0x17c, 4, 16, true, ENOTSUP, "block extra" },
	{ "link uuid", 0x1a8, 4, 1, true, ENOTSUP, "link or parent" },
	{ "parent uuid", 0x1b8, 4, 1, true, ENOTSUP, "link or parent" },
	{ "bmap unaligned", 0x154, 4, 0x204, true, ECOR, "unaligned" },
	{ "data unaligned", 0x158, 4, 0x404, true, ECOR, "unaligned" },
	{ "bmap in header", 0x154, 4, 0, true, ECOR, "inside the header" },
	{ "too many blocks", 0x180, 4, 0x40000000, true, ECOR, "too many" },
	{ "size beyond blocks", 0x170, 8, 9 * MIB, true, ECOR, "does not fit" },
	{ "size not sectors", 0x170, 8, 8 * MIB - 1, true, ECOR,
	  "multiple of 512" },
	{ "data over bmap", 0x158, 4, 0x200, true, ECOR, "overlaps" },
	{ "bmap past EOF", 0x204, 0, 0, true, ECOR, "past the end" },
	{ "allocated count", 0x184, 4, 9, true, ECOR, "allocated blocks" },
	{ "entry out of range", 0x200, 4, 8, true, ECOR, "block map entry 0" },
	{ "entry shared", 0x20c, 4, 0, false, ECOR, "corruptions" },
	{ "count mismatch", 0x184, 4, 1, false, ECOR, "corruptions" },
	{ "file too small", 300, 0, 0, true, ECOR, "too small" },
};

int main(void)
{
	static const struct ft_write w[] = {
		{ 0, 4096, 0x11 },
		{ 3 * MIB + 5, 1000, 0x22 },
	};
	char msg[256];
	uint8_t *img;
	size_t len;

	CHECK_OK(ft_build("vdi", 8 * MIB, NULL, w, 2, &img, &len));
	if (tap_failures)
		return test_done();
	CHECK_EQ(ft_exercise(img, len, "vdi", msg, sizeof(msg)), 0);
	CHECK_EQ(img_le32(img + 0x184), 2);
	CHECK_EQ(img_le32(img + 0x200), 0);
	CHECK_EQ(img_le32(img + 0x20c), 1);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		const struct vcase *c = &cases[i];
		uint8_t *b = malloc(len);
		size_t n = len;

		memcpy(b, img, len);
		if (c->width == 4)
			img_put_le32(b + c->off, (uint32_t)c->val);
		else if (c->width == 8)
			img_put_le64(b + c->off, c->val);
		else
			n = c->off;
		CHECK(ft_invalid_case(c->name, b, n, "vdi", c->at_open, c->err,
				      c->msg));
		free(b);
	}
	free(img);
	return test_done();
}
