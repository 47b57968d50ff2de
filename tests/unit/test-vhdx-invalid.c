/* SPDX-License-Identifier: MIT */
/*
 * Invalid VHDX images: each case takes a consistent dynamic image made by
 * the driver (1 MiB blocks, two blocks written), corrupts one field of the
 * file identifier, the headers, the region tables, the metadata or the BAT
 * (recomputing the CRC-32C unless the checksum is under test), and expects a
 * clean error naming the problem: at open for structure fields, at check
 * for a block past the end of the file.
 */
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "tap.h"

#define ECOR IMG_ECORRUPT
#define KIB 1024u
#define MIB (1024u * 1024)
#define H1 (64 * KIB)
#define H2 (128 * KIB)
#define R1 (192 * KIB)
#define R2 (256 * KIB)
#define BAT (2 * MIB)
#define META (3 * MIB)

struct vimg {
	uint8_t *b;
	size_t len;
};

static uint32_t crc32c(const uint8_t *p, size_t n, size_t skip)
{
	uint32_t c = 0xffffffff;

	for (size_t i = 0; i < n; i++) {
		c ^= (i >= skip && i < skip + 4) ? 0 : p[i];
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78 : c >> 1;
	}
	return ~c;
}

static void fix(struct vimg *v)
{
	img_put_le32(v->b + H1 + 4, crc32c(v->b + H1, 4 * KIB, 4));
	img_put_le32(v->b + H2 + 4, crc32c(v->b + H2, 4 * KIB, 4));
	img_put_le32(v->b + R1 + 4, crc32c(v->b + R1, 64 * KIB, 4));
	img_put_le32(v->b + R2 + 4, crc32c(v->b + R2, 64 * KIB, 4));
}

static void both_h16(struct vimg *v, unsigned off, uint16_t val)
{
	img_put_le16(v->b + H1 + off, val);
	img_put_le16(v->b + H2 + off, val);
	fix(v);
}

static void both_r32(struct vimg *v, unsigned off, uint32_t val)
{
	img_put_le32(v->b + R1 + off, val);
	img_put_le32(v->b + R2 + off, val);
	fix(v);
}

static void m_id(struct vimg *v)
{
	memcpy(v->b, "vhdxfilf", 8);
}
static void m_head_sig(struct vimg *v)
{
	memcpy(v->b + H1, "heaD", 4);
	memcpy(v->b + H2, "heaD", 4);
	fix(v);
}
static void m_head_crc(struct vimg *v)
{
	v->b[H1 + 100] ^= 1;
	v->b[H2 + 100] ^= 1;
}
static void m_version(struct vimg *v)
{
	both_h16(v, 66, 2);
}
static void m_log_version(struct vimg *v)
{
	both_h16(v, 64, 1);
}
static void m_same_seq(struct vimg *v)
{
	img_put_le64(v->b + H1 + 8, 7);
	img_put_le64(v->b + H2 + 8, 7);
	v->b[H1 + 200] = 1;
	fix(v);
}
static void m_region_sig(struct vimg *v)
{
	memcpy(v->b + R1, "regI", 4);
	memcpy(v->b + R2, "regI", 4);
	fix(v);
}
static void m_region_count(struct vimg *v)
{
	both_r32(v, 8, 5000);
}
static void m_region_align(struct vimg *v)
{
	both_r32(v, 32, BAT + 4096);
}
static void m_region_missing(struct vimg *v)
{
	both_r32(v, 8, 1);
}
static void m_region_unknown(struct vimg *v)
{
	v->b[R1 + 48] ^= 0xff;
	v->b[R2 + 48] ^= 0xff;
	fix(v);
}
static void m_meta_sig(struct vimg *v)
{
	memcpy(v->b + META, "metadatA", 8);
}
static void m_block_3m(struct vimg *v)
{
	img_put_le32(v->b + META + 64 * KIB, 3 * MIB);
}
static void m_block_512m(struct vimg *v)
{
	img_put_le32(v->b + META + 64 * KIB, 512 * MIB);
}
static void m_lsector(struct vimg *v)
{
	img_put_le32(v->b + META + 64 * KIB + 32, 1024);
}
static void m_vsize_odd(struct vimg *v)
{
	img_put_le64(v->b + META + 64 * KIB + 8, 8 * MIB + 100);
}
static void m_vsize_huge(struct vimg *v)
{
	img_put_le64(v->b + META + 64 * KIB + 8, 1ull << 50);
}
static void m_item_off(struct vimg *v)
{
	img_put_le32(v->b + META + 32 + 16, 2 * MIB);
}
static void m_item_unknown(struct vimg *v)
{
	v->b[META + 32 + 32 * 2] ^= 0xff; /* disk id: required, now unknown */
}
static void m_bat_zero(struct vimg *v)
{
	img_put_le64(v->b + BAT + 8 * 5, 6);
}
static void m_bat_past(struct vimg *v)
{
	img_put_le64(v->b + BAT + 8 * 5, (uint64_t)4000 << 20 | 6);
}
static void m_log_off(struct vimg *v)
{
	v->b[H1 + 48] = 1;
	v->b[H2 + 48] = 1;
	img_put_le64(v->b + H1 + 72, MIB + 4096);
	img_put_le64(v->b + H2 + 72, MIB + 4096);
	fix(v);
}
static void m_parent(struct vimg *v)
{
	img_put_le32(v->b + META + 64 * KIB + 4, 2);
}
static void m_tiny(struct vimg *v)
{
	v->len = 4096;
}

struct vcase {
	const char *name;
	void (*mutate)(struct vimg *v);
	bool at_open;
	int err;
	const char *msg;
};

static const struct vcase cases[] = {
	{ "file identifier", m_id, true, ECOR, "vhdxfile" },
	{ "header signatures", m_head_sig, true, ECOR, "no valid header" },
	{ "header checksums", m_head_crc, true, ECOR, "no valid header" },
	{ "header version 2", m_version, true, ECOR, "no valid header" },
	{ "log version 1", m_log_version, true, ENOTSUP, "log version" },
	{ "same sequence", m_same_seq, true, ECOR, "both headers" },
	{ "region signatures", m_region_sig, true, ECOR, "no valid region" },
	{ "region count", m_region_count, true, ECOR, "5000 entries" },
	{ "region alignment", m_region_align, true, ECOR, "MiB aligned" },
	{ "region missing", m_region_missing, true, ECOR, "lacks" },
	{ "region unknown", m_region_unknown, true, ENOTSUP,
	  "unknown required" },
	{ "metadata signature", m_meta_sig, true, ECOR, "metadata table" },
	{ "block size 3M", m_block_3m, true, ECOR, "block size" },
	{ "block size 512M", m_block_512m, true, ECOR, "block size" },
	{ "logical sector", m_lsector, true, ECOR, "sector sizes" },
	{ "virtual size odd", m_vsize_odd, true, ECOR, "virtual size" },
	{ "virtual size huge", m_vsize_huge, true, ECOR, "virtual size" },
	{ "item offset", m_item_off, true, ECOR, "metadata item" },
	{ "item unknown", m_item_unknown, true, ENOTSUP, "required metadata" },
	{ "BAT into headers", m_bat_zero, true, ECOR, "into the headers" },
	{ "BAT past EOF", m_bat_past, true, ECOR, "has been truncated" },
	{ "log offset", m_log_off, true, ECOR, "log of" },
	{ "parent flag", m_parent, true, ECOR, "names no parent" },
	{ "file too small", m_tiny, true, ECOR, "no valid header" },
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

	CHECK_OK(ft_build("vhdx", 8 * MIB, "block_size=1M", w, 2, &img, &len));
	if (tap_failures)
		return test_done();
	CHECK_EQ(ft_exercise(img, len, "vhdx", msg, sizeof(msg)), 0);
	CHECK_EQ(img_le64(img + BAT) & 7, 6);
	CHECK_EQ(img_le64(img + BAT + 24) & 7, 6);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		const struct vcase *c = &cases[i];
		struct vimg v = { malloc(len), len };

		memcpy(v.b, img, len);
		c->mutate(&v);
		CHECK(ft_invalid_case(c->name, v.b, v.len, "vhdx", c->at_open,
				      c->err, c->msg));
		free(v.b);
	}
	free(img);
	return test_done();
}
