/* SPDX-License-Identifier: MIT */
/*
 * Invalid VMDK images: each case takes a consistent image made by the
 * driver (monolithicSparse with two grains written, or streamOptimized with
 * compressed grains) or a small text descriptor, corrupts one field of the
 * sparse header, the footer, the embedded descriptor, the GD, a GT, a
 * compressed grain or a descriptor line, and expects a clean error naming
 * the problem: at open for header and descriptor fields, at open, read,
 * check or write for table entries and grains.
 */
#include <stdlib.h>
#include <string.h>

#include "fmt-testlib.h"
#include "img-driver.h"
#include "tap.h"

#define ECOR IMG_ECORRUPT
#define MIB (1ull << 20)
#define GD_SECTOR 26 /* 8 MiB monolithicSparse as qemu-img lays it out */
#define GRAIN0 128 /* first grain's sector in both base images */

enum base { B_SPARSE, B_STREAM, B_TEXT };

struct vimg {
	uint8_t *b;
	size_t len;
};

static void put_desc(struct vimg *v, const char *from, const char *to)
{
	char *d = (char *)v->b + 512, *p = strstr(d, from);

	if (!p)
		return;
	memmove(p + strlen(to), p + strlen(from), strlen(p + strlen(from)) + 1);
	memcpy(p, to, strlen(to));
}

static void m_magic(struct vimg *v)
{
	memcpy(v->b, "KDMX", 4);
}
static void m_cowd(struct vimg *v)
{
	memcpy(v->b, "COWD", 4);
}
static void m_version(struct vimg *v)
{
	img_put_le32(v->b + 4, 4);
}
static void m_newline(struct vimg *v)
{
	v->b[75] = '\n';
}
static void m_algorithm(struct vimg *v)
{
	img_put_le32(v->b + 8, img_le32(v->b + 8) | (1u << 16));
	img_put_le16(v->b + 77, 2);
}
static void m_grain3(struct vimg *v)
{
	img_put_le64(v->b + 20, 3);
}
static void m_grain4m(struct vimg *v)
{
	img_put_le64(v->b + 20, 8192);
}
static void m_gtes0(struct vimg *v)
{
	img_put_le32(v->b + 44, 0);
}
static void m_gtes1024(struct vimg *v)
{
	img_put_le32(v->b + 44, 1024);
}
static void m_capacity(struct vimg *v)
{
	img_put_le64(v->b + 12, 1ull << 60);
}
static void m_gd_off(struct vimg *v)
{
	img_put_le64(v->b + 56, 1u << 30);
}
static void m_desc_off(struct vimg *v)
{
	img_put_le64(v->b + 28, 1u << 30);
}
static void m_desc_size(struct vimg *v)
{
	img_put_le64(v->b + 36, 1u << 22);
}
static void m_cid(struct vimg *v)
{
	put_desc(v, "CID=", "CID=zz");
}
static void m_create_type(struct vimg *v)
{
	put_desc(v, "createType=", "createTipe=");
}
static void m_gd_entry(struct vimg *v)
{
	img_put_le32(v->b + GD_SECTOR * 512, 0x7fffffff);
}
/* GT 0 follows the GD's sector. */
static void m_gte_past(struct vimg *v)
{
	img_put_le32(v->b + (GD_SECTOR + 1) * 512, 0x7fffff00);
}
static void m_gte_one(struct vimg *v)
{
	img_put_le32(v->b + (GD_SECTOR + 1) * 512, 1);
}
static void m_gte_header(struct vimg *v)
{
	img_put_le32(v->b + (GD_SECTOR + 1) * 512, 2);
}
static void m_no_footer(struct vimg *v)
{
	v->len -= 1536;
}
static void m_footer_type(struct vimg *v)
{
	v->b[v->len - 1536 + 12] = 7;
}
static void m_grain_size(struct vimg *v)
{
	img_put_le32(v->b + GRAIN0 * 512 + 8, 0x7fffffff);
}
static void m_grain_data(struct vimg *v)
{
	memset(v->b + GRAIN0 * 512 + 12, 0x55, 32);
}

static const char text_ok[] =
	"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
	"createType=\"monolithicFlat\"\nRW 2048 ZERO\n";

static void set_text(struct vimg *v, const char *from, const char *to)
{
	char *t = malloc(sizeof(text_ok) + 256), *p;

	strcpy(t, text_ok);
	p = strstr(t, from);
	memmove(p + strlen(to), p + strlen(from), strlen(p + strlen(from)) + 1);
	memcpy(p, to, strlen(to));
	free(v->b);
	v->b = (uint8_t *)t;
	v->len = strlen(t);
}
static void m_t_type(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 2048 VMFSSPARSE \"x.vmdk\"");
}
static void m_t_noaccess(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "NOACCESS 2048 FLAT \"x.vmdk\" 0");
}
static void m_t_dotdot(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 2048 FLAT \"a/../../x.vmdk\" 0");
}
static void m_t_abs(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 2048 FLAT \"/dev/zero\" 0");
}
static void m_t_size(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 20x48 ZERO");
}
static void m_t_quote(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 2048 FLAT \"x.vmdk 0");
}
static void m_t_none(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "# no extent");
}
static void m_t_offset(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO", "RW 2048 FLAT \"x.vmdk\" -5");
}
static void m_t_huge(struct vimg *v)
{
	set_text(v, "RW 2048 ZERO\n",
		 "RW 9007199254740991 ZERO\nRW 9007199254740991 ZERO\n"
		 "RW 9007199254740991 ZERO\n");
}

struct vcase {
	const char *name;
	enum base base;
	void (*mutate)(struct vimg *v);
	bool at_open;
	int err;
	const char *msg;
};

static const struct vcase cases[] = {
	{ "magic", B_SPARSE, m_magic, true, ECOR, NULL },
	{ "COWD", B_SPARSE, m_cowd, true, ENOTSUP, "COWD" },
	{ "version 4", B_SPARSE, m_version, true, ENOTSUP, "version 4" },
	{ "newline check", B_SPARSE, m_newline, true, ECOR, "newline" },
	{ "compression 2", B_SPARSE, m_algorithm, true, ENOTSUP,
	  "compression algorithm" },
	{ "grain 3 sectors", B_SPARSE, m_grain3, true, ECOR, "grain size" },
	{ "grain 4 MiB", B_SPARSE, m_grain4m, true, ECOR, "grain size" },
	{ "0 GTEs", B_SPARSE, m_gtes0, true, ECOR, "entries per grain table" },
	{ "1024 GTEs", B_SPARSE, m_gtes1024, true, ECOR,
	  "entries per grain table" },
	{ "capacity", B_SPARSE, m_capacity, true, ECOR, "capacity" },
	{ "GD offset", B_SPARSE, m_gd_off, true, ECOR, "grain directory" },
	{ "descriptor offset", B_SPARSE, m_desc_off, true, ECOR,
	  "descriptor at sector" },
	{ "descriptor size", B_SPARSE, m_desc_size, true, ECOR,
	  "descriptor at sector" },
	{ "CID", B_SPARSE, m_cid, true, ECOR, "CID" },
	{ "createType", B_SPARSE, m_create_type, true, ECOR, "createType" },
	{ "GD entry", B_SPARSE, m_gd_entry, false, ECOR, "grain table 0" },
	{ "GT entry past EOF", B_SPARSE, m_gte_past, false, EIO,
	  "past the end of 'mem'" },
	{ "GT entry 1", B_SPARSE, m_gte_one, false, ECOR, "header" },
	{ "GT entry in header", B_SPARSE, m_gte_header, false, ECOR,
	  "corruptions" },
	{ "no footer", B_STREAM, m_no_footer, true, ECOR, "footer" },
	{ "footer marker", B_STREAM, m_footer_type, true, ECOR, "footer" },
	{ "grain size", B_STREAM, m_grain_size, false, ECOR, "bad size" },
	{ "grain data", B_STREAM, m_grain_data, false, ECOR, "inflate" },
	{ "extent type", B_TEXT, m_t_type, true, ENOTSUP, "VMFSSPARSE" },
	{ "NOACCESS", B_TEXT, m_t_noaccess, true, ENOTSUP, "NOACCESS" },
	{ "extent ..", B_TEXT, m_t_dotdot, true, EACCES, "outside" },
	{ "extent absolute", B_TEXT, m_t_abs, true, EACCES, "outside" },
	{ "extent size", B_TEXT, m_t_size, true, ECOR, "extent size" },
	{ "extent quote", B_TEXT, m_t_quote, true, ECOR, "not terminated" },
	{ "no extent", B_TEXT, m_t_none, true, ECOR, "no extent" },
	{ "flat offset", B_TEXT, m_t_offset, true, ECOR, "offset" },
	{ "extents too large", B_TEXT, m_t_huge, true, ECOR, "2^63" },
};

int main(void)
{
	static const struct ft_write w[] = {
		{ 0, 65536, 0x11 },
		{ 3 * MIB + 5, 1000, 0x22 },
	};
	uint8_t *base[3];
	size_t len[3];
	char msg[256];

	CHECK_OK(ft_build("vmdk", 8 * MIB, NULL, w, 2, &base[B_SPARSE],
			  &len[B_SPARSE]));
	CHECK_OK(ft_build("vmdk", 8 * MIB, "subformat=streamOptimized", w, 2,
			  &base[B_STREAM], &len[B_STREAM]));
	if (tap_failures)
		return test_done();
	base[B_TEXT] = (uint8_t *)strdup(text_ok);
	len[B_TEXT] = strlen(text_ok);
	/* Clean; a finished stream and a ZERO extent refuse the write. */
	CHECK_EQ(ft_exercise(base[0], len[0], "vmdk", msg, sizeof(msg)), 0);
	CHECK_EQ(ft_exercise(base[1], len[1], "vmdk", msg, sizeof(msg)),
		 -ENOTSUP);
	CHECK_EQ(ft_exercise(base[2], len[2], "vmdk", msg, sizeof(msg)),
		 -EROFS);
	CHECK_EQ(img_le32(base[B_SPARSE] + GD_SECTOR * 512), GD_SECTOR + 1);
	CHECK_EQ(img_le32(base[B_STREAM] + GRAIN0 * 512), 0);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		const struct vcase *c = &cases[i];
		struct vimg v;

		v.len = len[c->base];
		v.b = malloc(v.len);
		memcpy(v.b, base[c->base], v.len);
		c->mutate(&v);
		CHECK(ft_invalid_case(c->name, v.b, v.len, "vmdk", c->at_open,
				      c->err, c->msg));
		free(v.b);
	}
	for (int i = 0; i < 3; i++)
		free(base[i]);
	return test_done();
}
