/* SPDX-License-Identifier: MIT */
/*
 * Invalid qcow2 images: each row of the table takes a small consistent image
 * built byte by byte (qt_build) and corrupts one field of the header, an
 * extension or a table. Header cases must fail img_open with the expected
 * -errno and a one-line "qcow2: ..." message naming the field. Table cases
 * (L1, L2, refcount entries) may be caught at open, on read, by img_check or
 * on write, but must be caught somewhere, always with a clean -errno, and a
 * write workload on a read-write open must leave a header that still opens.
 * Nothing may crash: run under ASan too (make asan).
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define ECOR IMG_ECORRUPT
#define COPIED (1ull << 63)
#define COMPRESSED (1ull << 62)
#define TIB (1ull << 40)

enum geom_id { G_DEF, G_V2, G_NOFT, G_BACK, G_SMALL };

enum stage {
	S_OPEN, /* read-only open fails */
	S_OPEN_RW, /* read-only open works, read-write open fails */
	S_OK, /* a valid (if unusual) image: opens, reads, checks clean */
	S_TABLE, /* caught at open, read, check or write */
	S_SURVIVE, /* may or may not be caught; never unclean */
};

enum loc { L_HDR, L_RT, L_RB, L_L1, L_L2, L_FT };

struct patch {
	enum loc loc;
	uint32_t off;
	unsigned width; /* 1, 4 or 8; 0 ends the list */
	uint64_t val;
};

struct icase {
	const char *name;
	enum geom_id geom;
	struct patch p[3];
	void (*mutate)(struct qt_img *im);
	enum stage stage;
	int err[3]; /* accepted -errno values, 0-terminated */
	const char *msg; /* '|'-separated alternatives, case-insensitive */
};

#define H8(o, v)                   \
	{                          \
		L_HDR, (o), 1, (v) \
	}
#define H32(o, v)                  \
	{                          \
		L_HDR, (o), 4, (v) \
	}
#define H64(o, v)                  \
	{                          \
		L_HDR, (o), 8, (v) \
	}
#define T64(l, o, v)             \
	{                        \
		(l), (o), 8, (v) \
	}
#define T32(l, o, v)             \
	{                        \
		(l), (o), 4, (v) \
	}

static void fill_ext_area(struct qt_img *im)
{
	memset(im->buf + im->ext_off, 0xa5,
	       (size_t)(im->cluster_size - im->ext_off));
}

/* Two backing format extensions (each type may appear once). */
static void dup_backing_fmt(struct qt_img *im)
{
	uint64_t p = im->ext_off;
	const char *name = "base.raw";

	memset(im->buf + p, 0, (size_t)(im->cluster_size - p));
	for (int i = 0; i < 2; i++) {
		qt_put32(im, p, 0xe2792aca);
		qt_put32(im, p + 4, 3);
		memcpy(im->buf + p + 8, i ? "raw" : "qcow", 3);
		p += 16;
	}
	p += 8;
	memcpy(im->buf + p, name, strlen(name));
	qt_put64(im, QT_H_BACKING_OFF, p);
	qt_put32(im, QT_H_BACKING_SIZE, (uint32_t)strlen(name));
}

/* Rename the first feature-table entry to incompatible bit 9 "frobnicate". */
static void name_bit9(struct qt_img *im)
{
	uint8_t *e = im->buf + im->feature_table_off + 8;

	memset(e, 0, 48);
	e[0] = 0;
	e[1] = 9;
	memcpy(e + 2, "frobnicate", 10);
	qt_put64(im, QT_H_INCOMPAT, 1ull << 9);
}

static void clear_refblock(struct qt_img *im)
{
	memset(im->buf + im->refblock_off, 0, (size_t)im->cluster_size);
}

/* A one-byte-too-short file: the data cluster is cut. */
static void truncate_data(struct qt_img *im)
{
	im->len = (size_t)im->data_off + 100;
}

/* v2 compressed descriptor for 4 KiB clusters: offset in bits 0..57,
 * additional 512-byte sectors in bits 58..61. */
#define V2_COMP(off, sectors) (COMPRESSED | (uint64_t)(sectors) << 58 | (off))

static const struct icase cases[] = {
	/* ---- header fields ---- */
	{ "bad magic",
	  G_DEF,
	  { H32(QT_H_MAGIC, 0x514649fa) },
	  NULL,
	  S_OPEN,
	  { ECOR, EINVAL },
	  "magic" },
	{ "version 0",
	  G_DEF,
	  { H32(QT_H_VERSION, 0) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "version" },
	{ "version 1",
	  G_DEF,
	  { H32(QT_H_VERSION, 1) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "version" },
	{ "version 4",
	  G_DEF,
	  { H32(QT_H_VERSION, 4) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "version" },
	{ "version 0xffffffff",
	  G_DEF,
	  { H32(QT_H_VERSION, 0xffffffff) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "version" },
	{ "cluster_bits 8",
	  G_DEF,
	  { H32(QT_H_CLUSTER_BITS, 8) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP },
	  "cluster" },
	{ "cluster_bits 22",
	  G_DEF,
	  { H32(QT_H_CLUSTER_BITS, 22) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "cluster" },
	{ "cluster_bits 63",
	  G_DEF,
	  { H32(QT_H_CLUSTER_BITS, 63) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "cluster" },
	{ "cluster_bits 64",
	  G_DEF,
	  { H32(QT_H_CLUSTER_BITS, 64) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "cluster" },
	{ "cluster_bits 0xffffffff",
	  G_DEF,
	  { H32(QT_H_CLUSTER_BITS, 0xffffffff) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "cluster" },
	{ "size 2^62",
	  G_DEF,
	  { H64(QT_H_SIZE, 1ull << 62) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP, EFBIG },
	  "size|l1" },
	{ "size 2^64-1",
	  G_DEF,
	  { H64(QT_H_SIZE, UINT64_MAX) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP, EFBIG },
	  "size|l1" },
	{ "l1_size too small for size",
	  G_DEF,
	  { H32(QT_H_L1_SIZE, 1) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "l1" },
	{ "l1_size 0",
	  G_DEF,
	  { H32(QT_H_L1_SIZE, 0) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "l1" },
	{ "l1_size 32M entries",
	  G_DEF,
	  { H32(QT_H_L1_SIZE, 32u << 20) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP, EFBIG },
	  "l1" },
	{ "l1_size 0xffffffff",
	  G_DEF,
	  { H32(QT_H_L1_SIZE, 0xffffffff) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP, EFBIG },
	  "l1" },
	{ "l1 offset unaligned",
	  G_DEF,
	  { H64(QT_H_L1_OFF, 0x3008) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "l1" },
	{ "l1 offset overflowing",
	  G_DEF,
	  { H64(QT_H_L1_OFF, 0xfffffffffffff000ull) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "l1" },
	{ "l1 offset past eof",
	  G_DEF,
	  { H64(QT_H_L1_OFF, TIB) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1" },
	{ "l1 offset 0 (header)",
	  G_DEF,
	  { H64(QT_H_L1_OFF, 0) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1" },
	{ "l1 overlapping refcount table",
	  G_DEF,
	  { H64(QT_H_L1_OFF, 0x1000) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1" },
	{ "refcount table offset unaligned",
	  G_DEF,
	  { H64(QT_H_RT_OFF, 0x1008) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "refcount" },
	{ "refcount table offset overflowing",
	  G_DEF,
	  { H64(QT_H_RT_OFF, 0xffffffffffff0000ull) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "refcount" },
	{ "refcount table offset 0 (header)",
	  G_DEF,
	  { H64(QT_H_RT_OFF, 0) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount table overlapping l1",
	  G_DEF,
	  { H64(QT_H_RT_OFF, 0x3000) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount_table_clusters 0",
	  G_DEF,
	  { H32(QT_H_RT_CLUSTERS, 0) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "refcount" },
	{ "refcount_table_clusters 0xffffffff",
	  G_DEF,
	  { H32(QT_H_RT_CLUSTERS, 0xffffffff) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP, EFBIG },
	  "refcount" },
	{ "refcount_order 7",
	  G_DEF,
	  { H32(QT_H_REFCOUNT_ORDER, 7) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP },
	  "refcount" },
	{ "refcount_order 0xffffffff",
	  G_DEF,
	  { H32(QT_H_REFCOUNT_ORDER, 0xffffffff) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP },
	  "refcount" },
	{ "header_length 100",
	  G_DEF,
	  { H32(QT_H_HEADER_LENGTH, 100) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "header" },
	{ "header_length 108",
	  G_DEF,
	  { H32(QT_H_HEADER_LENGTH, 108) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "header" },
	{ "header_length past cluster",
	  G_DEF,
	  { H32(QT_H_HEADER_LENGTH, 8192) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "header" },
	{ "header_length 0xfffffff8",
	  G_DEF,
	  { H32(QT_H_HEADER_LENGTH, 0xfffffff8) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "header" },
	{ "unknown incompatible bit 9",
	  G_NOFT,
	  { H64(QT_H_INCOMPAT, 1ull << 9) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP },
	  "bit 9" },
	{ "unknown incompatible bit 63",
	  G_NOFT,
	  { H64(QT_H_INCOMPAT, 1ull << 63) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP },
	  "bit 63" },
	{ "named unknown incompatible bit",
	  G_DEF,
	  { { 0 } },
	  name_bit9,
	  S_OPEN,
	  { ENOTSUP },
	  "frobnicate" },
	{ "dirty bit without lazy refcounts",
	  G_DEF,
	  { H64(QT_H_INCOMPAT, 1) },
	  NULL,
	  S_OK,
	  { 0 },
	  NULL },
	{ "corrupt bit",
	  G_DEF,
	  { H64(QT_H_INCOMPAT, 2) },
	  NULL,
	  S_OPEN_RW,
	  { ECOR },
	  "corrupt" },
	{ "unknown compatible bit",
	  G_DEF,
	  { H64(QT_H_COMPAT, 1ull << 7) },
	  NULL,
	  S_OK,
	  { 0 },
	  NULL },
	{ "unknown autoclear bit",
	  G_DEF,
	  { H64(QT_H_AUTOCLEAR, 1ull << 9) },
	  NULL,
	  S_OK,
	  { 0 },
	  NULL },
	{ "backing name offset past cluster",
	  G_BACK,
	  { H64(QT_H_BACKING_OFF, 0x2000) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "backing" },
	{ "backing name straddling cluster end",
	  G_BACK,
	  { H64(QT_H_BACKING_OFF, 4090) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "backing" },
	{ "backing name offset overflowing",
	  G_BACK,
	  { H64(QT_H_BACKING_OFF, 0xfffffffffffffff8ull) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "backing" },
	{ "backing name size 1024",
	  G_BACK,
	  { H32(QT_H_BACKING_SIZE, 1024) },
	  NULL,
	  S_OPEN,
	  { ECOR, EINVAL, ENAMETOOLONG },
	  "backing" },
	{ "backing name inside extensions",
	  G_BACK,
	  { H64(QT_H_BACKING_OFF, 112) },
	  NULL,
	  S_SURVIVE,
	  { ECOR },
	  "backing|extension" },
	{ "extension length past cluster",
	  G_DEF,
	  { T32(L_FT, 4, 0x1000) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "extension" },
	{ "extension length 0xfffffff8",
	  G_DEF,
	  { T32(L_FT, 4, 0xfffffff8) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "extension" },
	{ "garbage extensions",
	  G_DEF,
	  { { 0 } },
	  fill_ext_area,
	  S_OPEN,
	  { ECOR },
	  "extension" },
	{ "garbage extensions v2",
	  G_V2,
	  { { 0 } },
	  fill_ext_area,
	  S_OPEN,
	  { ECOR },
	  "extension" },
	{ "duplicate backing format extension",
	  G_BACK,
	  { { 0 } },
	  dup_backing_fmt,
	  S_OPEN,
	  { ECOR },
	  "extension|format" },
	{ "feature table length not a multiple of 48",
	  G_DEF,
	  { T32(L_FT, 4, 100) },
	  NULL,
	  S_SURVIVE,
	  { ECOR },
	  "feature|extension" },
	{ "data file bit without data file name",
	  G_DEF,
	  { H64(QT_H_INCOMPAT, 1ull << 2) },
	  NULL,
	  S_OPEN,
	  { ECOR, EINVAL, ENOTSUP },
	  "data" },
	{ "compression_type 2",
	  G_DEF,
	  { H64(QT_H_INCOMPAT, 1ull << 3), H8(QT_H_COMPRESSION, 2) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "compression" },
	{ "compression_type without its bit",
	  G_DEF,
	  { H8(QT_H_COMPRESSION, 1) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "compression" },
	{ "extended_l2 with 4k clusters",
	  G_SMALL,
	  { H64(QT_H_INCOMPAT, 1ull << 4) },
	  NULL,
	  S_OPEN,
	  { ECOR, ENOTSUP },
	  "extended" },
	{ "crypt_method 3",
	  G_DEF,
	  { H32(QT_H_CRYPT, 3) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "crypt" },
	{ "crypt_method aes",
	  G_DEF,
	  { H32(QT_H_CRYPT, 1) },
	  NULL,
	  S_OPEN,
	  { EACCES, ENOTSUP, ECOR }, /* no passphrase given */
	  "crypt|passphrase" },
	{ "crypt_method luks without crypto extension",
	  G_DEF,
	  { H32(QT_H_CRYPT, 2) },
	  NULL,
	  S_OPEN,
	  { ENOTSUP, ECOR },
	  "crypt|luks" },
	{ "nb_snapshots huge, offset 0",
	  G_DEF,
	  { H32(QT_H_NB_SNAPSHOTS, 0xffffffff), H64(QT_H_SNAPSHOTS_OFF, 0) },
	  NULL,
	  S_OPEN,
	  { ECOR, EFBIG },
	  "snapshot" },
	{ "snapshot table unaligned",
	  G_DEF,
	  { H32(QT_H_NB_SNAPSHOTS, 1), H64(QT_H_SNAPSHOTS_OFF, 0x5008) },
	  NULL,
	  S_OPEN,
	  { ECOR },
	  "snapshot" },
	{ "nb_snapshots 65537",
	  G_DEF,
	  { H32(QT_H_NB_SNAPSHOTS, 65537), H64(QT_H_SNAPSHOTS_OFF, 0x5000) },
	  NULL,
	  S_OPEN,
	  { ECOR, EFBIG },
	  "snapshot" },
	/* ---- tables ---- */
	{ "l1 entry reserved bits",
	  G_DEF,
	  { T64(L_L1, 0, 0x4000 | COPIED | 2) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1|l2" },
	{ "l1 entry past eof",
	  G_DEF,
	  { T64(L_L1, 0, TIB | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1|l2" },
	{ "l1 entry with unaligned l2",
	  G_DEF,
	  { T64(L_L1, 0, 0x4200 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1|l2" },
	{ "l1 entry pointing at the refcount table",
	  G_DEF,
	  { T64(L_L1, 0, 0x1000 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1|l2" },
	{ "l1 entry pointing at the refcount block",
	  G_DEF,
	  { T64(L_L1, 8, 0x2000 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l1|l2" },
	{ "l2 entry unaligned",
	  G_DEF,
	  { T64(L_L2, 0, 0x5200 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l2|cluster" },
	{ "l2 entry data offset 0 (header)",
	  G_DEF,
	  { T64(L_L2, 0, COPIED) },
	  NULL,
	  S_SURVIVE,
	  { ECOR },
	  "l2|cluster" },
	{ "l2 entry pointing at the refcount table",
	  G_DEF,
	  { T64(L_L2, 0, 0x1000 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l2|cluster" },
	{ "l2 entry pointing at its own l2 table",
	  G_DEF,
	  { T64(L_L2, 0, 0x4000 | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l2|cluster" },
	{ "l2 entry reserved bits",
	  G_DEF,
	  { T64(L_L2, 0, 0x5000 | COPIED | (1ull << 56)) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l2|cluster" },
	{ "l2 entry past eof",
	  G_DEF,
	  { T64(L_L2, 0, TIB | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "l2|cluster" },
	{ "compressed v2 cluster past eof",
	  G_V2,
	  { T64(L_L2, 0, V2_COMP(TIB + 100, 15)) },
	  NULL,
	  S_TABLE,
	  { ECOR, ENOTSUP },
	  "compress|l2" },
	{ "compressed v2 cluster over the header",
	  G_V2,
	  { T64(L_L2, 0, V2_COMP(0, 15)) },
	  NULL,
	  S_TABLE,
	  { ECOR, ENOTSUP },
	  "compress|l2" },
	{ "compressed cluster with copied flag",
	  G_V2,
	  { T64(L_L2, 0, V2_COMP(0x5000, 1) | COPIED) },
	  NULL,
	  S_TABLE,
	  { ECOR, ENOTSUP },
	  "compress|l2" },
	{ "refcount block past eof",
	  G_DEF,
	  { T64(L_RT, 0, TIB) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount block unaligned",
	  G_DEF,
	  { T64(L_RT, 0, 0x2200) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount block pointing at l1",
	  G_DEF,
	  { T64(L_RT, 0, 0x3000) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount block all zero",
	  G_DEF,
	  { { 0 } },
	  clear_refblock,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "refcount table entry reserved bits",
	  G_DEF,
	  { T64(L_RT, 0, 0x2000 | 1) },
	  NULL,
	  S_TABLE,
	  { ECOR },
	  "refcount" },
	{ "file cut inside a data cluster",
	  G_DEF,
	  { { 0 } },
	  truncate_data,
	  S_SURVIVE,
	  { ECOR },
	  "" },
};

static bool errno_ok(const struct icase *c, int ret)
{
	for (int i = 0; i < 3 && c->err[i]; i++)
		if (ret == -c->err[i])
			return true;
	return false;
}

static bool msg_has(const char *msg, const char *alts)
{
	char buf[200], *save = NULL;

	if (!alts || !*alts)
		return true;
	snprintf(buf, sizeof(buf), "%s", alts);
	for (char *t = strtok_r(buf, "|", &save); t;
	     t = strtok_r(NULL, "|", &save))
		if (strcasestr(msg, t))
			return true;
	return false;
}

/* A failed call must give an accepted -errno and one clean "qcow2:" line. */
static void expect_clean(const struct icase *c, const char *what, int ret,
			 bool strict)
{
	const char *m = img_last_error();
	bool ok_errno = strict ? errno_ok(c, ret) :
				 (errno_ok(c, ret) || ret == -IMG_ECORRUPT ||
				  ret == -ENOTSUP || ret == -ENOSPC ||
				  ret == -EIO || ret == -EFBIG);
	bool ok_msg = !strchr(m, '\n') && (!strncmp(m, "qcow2:", 6) ||
					   (!strict && !strncmp(m, "io:", 3)));

	CHECK(ok_errno && ok_msg);
	if (!ok_errno || !ok_msg || (strict && !msg_has(m, c->msg)))
		printf("# [%s] %s: %d (%s): \"%s\"\n", c->name, what, ret,
		       strerror(-ret), m);
	if (strict)
		CHECK(msg_has(m, c->msg));
}

static uint8_t *apply(const struct icase *c, struct qt_img *im)
{
	struct qt_geom g = qt_geom_default();

	switch (c->geom) {
	case G_DEF:
		break;
	case G_V2:
		g.version = 2;
		g.feature_table = false;
		break;
	case G_NOFT:
		g.feature_table = false;
		break;
	case G_BACK:
		g.backing = "base.raw";
		g.backing_fmt = "raw";
		break;
	case G_SMALL:
		g.size = 512 << 10;
		break;
	}
	if (qt_build(&g, im) < 0)
		return NULL;
	for (int i = 0; i < 3 && c->p[i].width; i++) {
		const struct patch *p = &c->p[i];
		uint64_t base = 0;

		switch (p->loc) {
		case L_HDR:
			break;
		case L_RT:
			base = im->reftable_off;
			break;
		case L_RB:
			base = im->refblock_off;
			break;
		case L_L1:
			base = im->l1_off;
			break;
		case L_L2:
			base = im->l2_off;
			break;
		case L_FT:
			base = im->feature_table_off;
			break;
		}
		if (p->width == 1)
			im->buf[base + p->off] = (uint8_t)p->val;
		else if (p->width == 4)
			qt_put32(im, base + p->off, (uint32_t)p->val);
		else
			qt_put64(im, base + p->off, p->val);
	}
	if (c->mutate)
		c->mutate(im);
	return im->buf;
}

/*
 * Read-only: open, read everything, check. Returns true if a problem was
 * detected (an error, or corruptions reported by check); *opened tells
 * whether the open worked.
 */
static bool ro_pass(const struct icase *c, const struct qt_img *im,
		    bool *opened)
{
	struct img *img;
	struct img_check res;
	bool detected = false;
	int ret;

	*opened = false;
	img_clear_error();
	ret = qt_open_bytes(im->buf, im->len,
			    IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING, &img);
	if (ret < 0) {
		expect_clean(c, "read-only open", ret, c->stage == S_OPEN);
		return true;
	}
	*opened = true;
	ret = qt_read_all(img, 64ull << 20);
	if (ret < 0) {
		expect_clean(c, "read", ret, false);
		detected = true;
	}
	ret = qt_check(img, &res, "check: ");
	if (ret < 0) {
		expect_clean(c, "check", ret, false);
		detected = true;
	} else if (res.corruptions || res.check_errors) {
		detected = true;
	}
	img_close(img);
	return detected;
}

/*
 * Read-write: open a copy, write over the mapped cluster and a new one, zero,
 * discard, flush, close; then the result must still open read-only.
 */
static bool rw_pass(const struct icase *c, const struct qt_img *im,
		    bool must_reopen)
{
	struct img_io *mem;
	struct img *img;
	uint8_t buf[6000];
	bool detected = false;
	int ret;

	if (img_io_mem_new(im->buf, im->len, &mem) < 0)
		return false;
	img_clear_error();
	ret = qt_open_borrowed(mem, IMG_OPEN_NO_BACKING, &img);
	if (ret < 0) {
		expect_clean(c, "read-write open", ret, false);
		img_io_close(mem);
		return true;
	}
	memset(buf, 0x3c, sizeof(buf));
	const struct {
		int op;
		uint64_t off, len;
	} ops[] = { { 0, 0, 100 },     { 0, 1000, 5000 }, { 0, 1 << 20, 4096 },
		    { 1, 8192, 4096 }, { 2, 0, 4096 },	  { 0, 3 << 20, 6000 },
		    { 3, 0, 0 } };
	for (size_t i = 0; i < IMG_ARRAY_SIZE(ops); i++) {
		switch (ops[i].op) {
		case 0:
			ret = img_write(img, buf, ops[i].off, ops[i].len, 0);
			break;
		case 1:
			ret = img_zero(img, ops[i].off, ops[i].len, 0);
			break;
		case 2:
			ret = img_discard(img, ops[i].off, ops[i].len);
			break;
		default:
			ret = img_flush(img);
			break;
		}
		if (ret < 0) {
			expect_clean(c, "write workload", ret, false);
			detected = true;
		}
	}
	ret = img_close(img);
	if (ret < 0) {
		expect_clean(c, "close", ret, false);
		detected = true;
	}
	if (must_reopen) {
		const uint8_t *data;
		size_t len;

		img_io_mem_data(mem, &data, &len);
		ret = qt_open_bytes(
			data, len, IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING, &img);
		CHECK_OK(ret);
		if (ret < 0)
			printf("# [%s] header destroyed by writes: %s\n",
			       c->name, img_last_error());
		else
			img_close(img);
	}
	img_io_close(mem);
	return detected;
}

static void run_case(const struct icase *c)
{
	struct qt_img im;
	struct img *img;
	struct img_check res;
	bool opened, detected;
	int fails_before = tap_failures;
	int ret;

	if (!apply(c, &im)) {
		CHECK(!"qt_build failed");
		return;
	}
	switch (c->stage) {
	case S_OPEN:
		ro_pass(c, &im, &opened);
		CHECK(!opened);
		if (opened)
			printf("# [%s] opened but should not have\n", c->name);
		break;
	case S_OPEN_RW:
		ret = qt_open_bytes(im.buf, im.len,
				    IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING,
				    &img);
		CHECK_OK(ret);
		if (ret >= 0) {
			CHECK_OK(qt_read_all(img, UINT64_MAX));
			img_close(img);
		}
		img_clear_error();
		ret = qt_open_bytes(im.buf, im.len, IMG_OPEN_NO_BACKING, &img);
		CHECK(ret < 0);
		if (ret < 0)
			expect_clean(c, "read-write open", ret, true);
		else
			img_close(img);
		break;
	case S_OK:
		ret = qt_open_bytes(im.buf, im.len,
				    IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING,
				    &img);
		CHECK_OK(ret);
		if (ret < 0)
			break;
		CHECK_OK(qt_read_all(img, UINT64_MAX));
		ret = qt_check(img, &res, "check: ");
		CHECK_OK(ret);
		CHECK_EQ(res.corruptions, 0);
		img_close(img);
		CHECK(!rw_pass(c, &im, true));
		break;
	case S_TABLE:
	case S_SURVIVE:
		detected = ro_pass(c, &im, &opened);
		detected |= rw_pass(c, &im, opened);
		if (c->stage == S_TABLE) {
			CHECK(detected);
			if (!detected)
				printf("# [%s] not detected by open, read, "
				       "check or writes\n",
				       c->name);
		}
		break;
	}
	printf("%s - %s\n", tap_failures == fails_before ? "ok" : "not ok",
	       c->name);
	qt_img_free(&im);
}

int main(void)
{
	struct qt_img im;
	struct qt_geom g = qt_geom_default();
	struct img *img;

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");

	/* The unmodified images must open and check clean. */
	for (int gi = 0; gi < 2; gi++) {
		if (gi == 1) {
			g.version = 2;
			g.feature_table = false;
		}
		CHECK_OK(qt_build(&g, &im));
		CHECK_OK(qt_open_bytes(im.buf, im.len, IMG_OPEN_RDONLY, &img));
		if (tap_failures) {
			printf("# base image does not open: %s\n",
			       img_last_error());
			qt_img_free(&im);
			return test_done();
		}
		img_close(img);
		qt_img_free(&im);
	}

	printf("# %zu cases\n", IMG_ARRAY_SIZE(cases));
	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++)
		run_case(&cases[i]);
	return test_done();
}
