/* SPDX-License-Identifier: MIT */
/*
 * Invalid VHD images: each case takes a consistent image made by the driver
 * (dynamic with two blocks written, or fixed), corrupts one field of the
 * footer, the dynamic header, the BAT or the parent locators (fixing the
 * checksums unless the checksum is the field under test), and expects a
 * clean error naming the problem: at open for header fields, at open, read,
 * check or write for table entries. Also the valid corner cases: the footer
 * only at the end, a differencing disk's locator picked by existence.
 */
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "tap.h"

#define ECOR IMG_ECORRUPT
#define MIB (1ull << 20)
#define BAT_OFF 1536

struct vimg {
	uint8_t *b;
	size_t len;
};

static uint32_t sum(const uint8_t *p, size_t n, size_t skip)
{
	uint32_t s = 0;

	for (size_t i = 0; i < n; i++)
		if (i < skip || i >= skip + 4)
			s += p[i];
	return ~s;
}

/* Recompute both footers' and the dynamic header's checksums. */
static void fix(struct vimg *v)
{
	uint8_t *tail = v->b + v->len - 512;

	if (!memcmp(v->b, "conectix", 8)) {
		img_put_be32(v->b + 64, sum(v->b, 512, 64));
		if (!memcmp(v->b + 512, "cxsparse", 8))
			img_put_be32(v->b + 512 + 36,
				     sum(v->b + 512, 1024, 36));
	}
	img_put_be32(tail + 64, sum(tail, 512, 64));
}

/* Apply f to the footer copy at 0 and the one at the end. */
#define FOOT(v, stmt)                                                  \
	do {                                                           \
		uint8_t *fs_[2] = { (v)->b, (v)->b + (v)->len - 512 }; \
		for (int i_ = 0; i_ < 2; i_++) {                       \
			uint8_t *f = fs_[i_];                          \
			stmt;                                          \
		}                                                      \
	} while (0)

static void m_cookie(struct vimg *v)
{
	FOOT(v, memcpy(f, "conectiy", 8));
}

static void m_checksum(struct vimg *v)
{
	FOOT(v, img_put_be32(f + 64, img_be32(f + 64) + 1));
}

static void m_type(struct vimg *v)
{
	FOOT(v, img_put_be32(f + 60, 5));
	fix(v);
}

static void m_size_odd(struct vimg *v)
{
	FOOT(v, (memcpy(f + 28, "qem2", 4), img_put_be64(f + 48, 8 * MIB + 1)));
	fix(v);
}

static void m_size_huge(struct vimg *v)
{
	FOOT(v, (memcpy(f + 28, "qem2", 4), img_put_be64(f + 48, 4ull << 40)));
	fix(v);
}

static void m_fixed_size(struct vimg *v)
{
	FOOT(v, (memcpy(f + 28, "qem2", 4), img_put_be64(f + 48, 2 * MIB)));
	fix(v);
}

static void m_hdr_off(struct vimg *v)
{
	FOOT(v, img_put_be64(f + 16, v->len));
	fix(v);
}

static void m_hdr_cookie(struct vimg *v)
{
	memcpy(v->b + 512, "cxsparsf", 8);
	fix(v);
}

static void m_hdr_checksum(struct vimg *v)
{
	fix(v);
	v->b[512 + 36] ^= 1;
}

static void m_bs_pow2(struct vimg *v)
{
	img_put_be32(v->b + 512 + 32, 3u << 20);
	fix(v);
}

static void m_bs_small(struct vimg *v)
{
	img_put_be32(v->b + 512 + 32, 256);
	fix(v);
}

static void m_bs_big(struct vimg *v)
{
	img_put_be32(v->b + 512 + 32, 512u << 20);
	fix(v);
}

static void m_entries(struct vimg *v)
{
	img_put_be32(v->b + 512 + 28, 2);
	fix(v);
}

static void m_bat_unaligned(struct vimg *v)
{
	img_put_be64(v->b + 512 + 16, BAT_OFF + 4);
	fix(v);
}

static void m_bat_past_eof(struct vimg *v)
{
	img_put_be64(v->b + 512 + 16, v->len);
	fix(v);
}

static void m_bat_zero(struct vimg *v)
{
	img_put_be32(v->b + BAT_OFF, 0);
}

static void m_bat_past_file(struct vimg *v)
{
	img_put_be32(v->b + BAT_OFF + 4, 0x7fffff00);
}

static void m_bat_same(struct vimg *v)
{
	memcpy(v->b + BAT_OFF + 4, v->b + BAT_OFF, 4);
}

static void m_bat_on_bat(struct vimg *v)
{
	img_put_be32(v->b + BAT_OFF + 4, BAT_OFF / 512);
}

/* Turn the dynamic disk into a differencing one naming no parent. */
static void m_diff_noname(struct vimg *v)
{
	FOOT(v, img_put_be32(f + 60, 4));
	fix(v);
}

static void set_locator(struct vimg *v, uint32_t len, uint64_t off)
{
	uint8_t *e = v->b + 512 + 576;

	FOOT(v, img_put_be32(f + 60, 4));
	memcpy(e, "W2ru", 4);
	img_put_be32(e + 4, 512);
	img_put_be32(e + 8, len);
	img_put_be64(e + 16, off);
	fix(v);
}

static void m_loc_past_eof(struct vimg *v)
{
	set_locator(v, 20, v->len - 10);
}

static void m_loc_huge(struct vimg *v)
{
	set_locator(v, 1u << 30, 0);
}

static void m_loc_surrogate(struct vimg *v)
{
	/* An unpaired UTF-16 surrogate in the locator at the BAT's tail. */
	uint8_t *p = v->b + BAT_OFF + 500;

	img_put_le16(p, 0xdc00);
	set_locator(v, 2, BAT_OFF + 500);
}

static void m_tiny(struct vimg *v)
{
	v->len = 100;
}

struct vcase {
	const char *name;
	bool fixed;
	void (*mutate)(struct vimg *v);
	bool at_open;
	int err;
	const char *msg;
};

static const struct vcase cases[] = {
	{ "footer cookie", false, m_cookie, true, ECOR, "conectix" },
	{ "footer checksum", false, m_checksum, true, ECOR, "checksum" },
	{ "disk type", false, m_type, true, ENOTSUP, "disk type 5" },
	{ "size not sectors", false, m_size_odd, true, ECOR, "disk size" },
	{ "size above 2040G", false, m_size_huge, true, ECOR, "disk size" },
	{ "fixed larger than file", true, m_fixed_size, true, ECOR,
	  "fixed disk" },
	{ "header offset", false, m_hdr_off, true, ECOR, "header offset" },
	{ "header cookie", false, m_hdr_cookie, true, ECOR, "cxsparse" },
	{ "header checksum", false, m_hdr_checksum, true, ECOR,
	  "header checksum" },
	{ "block size 3M", false, m_bs_pow2, true, ECOR, "block size" },
	{ "block size 256", false, m_bs_small, true, ECOR, "block size" },
	{ "block size 512M", false, m_bs_big, true, ECOR, "block size" },
	{ "max table entries", false, m_entries, true, ECOR, "BAT of 2" },
	{ "BAT unaligned", false, m_bat_unaligned, true, ECOR, "BAT at" },
	{ "BAT past EOF", false, m_bat_past_eof, true, ECOR, "BAT at" },
	{ "BAT entry 0", false, m_bat_zero, true, ECOR, "BAT entry 0" },
	{ "BAT entry past file", false, m_bat_past_file, true, ECOR,
	  "has been truncated" },
	{ "BAT entries shared", false, m_bat_same, false, ECOR, "corruptions" },
	{ "BAT entry on the BAT", false, m_bat_on_bat, false, ECOR,
	  "corruptions" },
	{ "no parent name", false, m_diff_noname, true, ECOR, "no parent" },
	{ "locator past EOF", false, m_loc_past_eof, true, ECOR,
	  "parent locator" },
	{ "locator huge", false, m_loc_huge, true, ECOR, "parent locator" },
	{ "locator surrogate", false, m_loc_surrogate, true, ECOR, NULL },
	{ "file too small", false, m_tiny, true, ECOR, "too small" },
};

static void test_valid_variants(const uint8_t *dyn, size_t len)
{
	uint8_t *b = malloc(len);
	struct img *img;
	uint8_t buf[4096];

	/* Footer copy at 0 destroyed: the one at the end still works. */
	memcpy(b, dyn, len);
	memset(b, 0, 8);
	CHECK_OK(ft_open(b, len, "vpc", IMG_OPEN_RDONLY, &img));
	if (img) {
		CHECK_OK(img_read(img, buf, 0, sizeof(buf)));
		CHECK(buf[0] == 0x11 && buf[4095] == 0x11);
		img_close(img);
	}
	free(b);
}

int main(void)
{
	static const struct ft_write w[] = {
		{ 0, 4096, 0x11 },
		{ 3 * MIB, 1000, 0x22 },
	};
	uint8_t *dyn, *fixed;
	size_t dyn_len, fixed_len;

	CHECK_OK(ft_build("vpc", 8 * MIB, "force_size=on", w, 2, &dyn,
			  &dyn_len));
	CHECK_OK(ft_build("vpc", MIB, "subformat=fixed,force_size=on", w, 1,
			  &fixed, &fixed_len));
	if (tap_failures)
		return test_done();
	/* The base images are clean. */
	{
		char msg[256];

		CHECK_EQ(ft_exercise(dyn, dyn_len, "vpc", msg, sizeof(msg)), 0);
		CHECK_EQ(ft_exercise(fixed, fixed_len, "vpc", msg, sizeof(msg)),
			 0);
	}
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		const struct vcase *c = &cases[i];
		struct vimg v;

		v.len = c->fixed ? fixed_len : dyn_len;
		v.b = malloc(v.len);
		memcpy(v.b, c->fixed ? fixed : dyn, v.len);
		c->mutate(&v);
		CHECK(ft_invalid_case(c->name, v.b, v.len, "vpc", c->at_open,
				      c->err, c->msg));
		free(v.b);
	}
	test_valid_variants(dyn, dyn_len);
	free(dyn);
	free(fixed);
	return test_done();
}
