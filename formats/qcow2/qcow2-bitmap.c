/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps of the qcow2 driver (QEMU docs/interop/qcow2.txt,
 * "Bitmaps"): the bitmaps header extension and the bitmap directory are
 * parsed and validated at open (every field, QEMU 7.2's limits: at most 65535
 * bitmaps, a directory of at most 64 MiB, granularity 2^9..2^31, names of
 * 1..1023 bytes, unique; bitmaps with extra data are refused as QEMU does);
 * bitmap tables are checked at open, bitmap data is read on first use into
 * a flat in-memory bit array (the on-disk serialisation: bit n of byte k
 * covers guest bytes [(8k + n) * granularity, +granularity)).
 *
 * Without the autoclear bit 0 the extension is treated as stale (a program
 * without bitmap support changed the image): the bitmaps are ignored and the
 * extension is dropped at the next header rewrite, as QEMU does. Bitmaps
 * found with the in_use flag are inconsistent: listed with that flag, never
 * changed or used, only removable.
 *
 * Dirty tracking and crash consistency: before the first write, discard or
 * zero after open (or after a flush) the enabled ("auto") bitmaps are loaded
 * and their in_use flag is set in the directory in place and flushed; guest
 * writes then only set bits in memory. Every flush (and so every clean
 * close) stores the changed bitmaps and clears in_use: data and table go to
 * freshly allocated clusters, then a new directory; refcounts and all of
 * these are flushed before the header names the new directory (one write,
 * flushed), and only then are the old directory, tables and data freed. A
 * crash therefore leaves either the old consistent bitmaps with in_use set
 * (which the spec then calls inconsistent) or the new ones, with at worst
 * leaked clusters. Bitmap operations (add, remove, clear, enable, disable,
 * merge) go through the same store. A resize sets in_use on every bitmap
 * before the header's size changes and stores them resized afterwards (new
 * bits clean, as QEMU); inconsistent bitmaps block a resize.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define BM_EXT_SIZE 24 /* nb_bitmaps, reserved32, directory size, offset */
#define BM_MAX_BITMAPS 65535
#define BM_MAX_DIR_SIZE (64ull << 20)
#define BM_MAX_NAME 1023
#define BM_MIN_GRAN_BITS 9
#define BM_MAX_GRAN_BITS 31
#define BM_MAX_TABLE_SIZE 0x8000000u /* entries (QEMU's limit) */
#define BM_MAX_PHYS_SIZE (512ull << 20) /* bitmap data bytes (QEMU's) */
#define BM_TYPE_DIRTY 1
#define BM_ENTRY_HDR 24
/* Bitmap data held in memory, all bitmaps together (untrusted sizes). */
#define BM_MAX_MEM (1ull << 30)

/* Directory entry flags. */
#define BM_FLAG_IN_USE (1u << 0)
#define BM_FLAG_AUTO (1u << 1)
#define BM_FLAG_EXTRA_COMPAT (1u << 2)
#define BM_FLAGS_RESERVED (~7u)

/* Bitmap table entry. */
#define BM_TE_OFFSET_MASK 0x00fffffffffffe00ull
#define BM_TE_RESERVED 0xff000000000001feull
#define BM_TE_ALL_ONES 1ull

struct bm {
	char *name;
	uint32_t flags; /* as in the directory, without our own in_use */
	uint8_t gran_bits;
	uint64_t table_off; /* 0 for a bitmap never stored */
	uint32_t table_size;
	uint64_t *table; /* host endian; NULL for inconsistent bitmaps */
	uint8_t *data; /* NULL until loaded */
	bool modified; /* data differs from what the table holds */
	/* Staged by store_data, adopted once the directory names it. */
	uint64_t new_table_off;
	uint32_t new_table_size;
	uint64_t *new_table;
};

struct qcow2_bitmaps {
	struct bm *bm;
	uint32_t n;
	uint64_t dir_off, dir_size; /* 0, 0 without a directory */
	bool tracking; /* in_use is set in the file on the auto bitmaps */
	bool resizing; /* ... and on all bitmaps, for a resize */
	/* Removed bitmaps whose clusters are freed after the next commit. */
	struct bm *gone;
	uint32_t n_gone;
	uint64_t mem; /* bytes of bitmap data in memory */
};

static bool bm_inconsistent(const struct bm *b)
{
	return b->flags & BM_FLAG_IN_USE;
}

static bool bm_tracked(const struct bm *b)
{
	return (b->flags & BM_FLAG_AUTO) && !bm_inconsistent(b);
}

static uint64_t bm_bits(const struct qcow2 *s, const struct bm *b)
{
	uint64_t g = 1ull << b->gran_bits;

	return (s->h.size + g - 1) >> b->gran_bits;
}

static uint64_t bm_data_size(const struct qcow2 *s, const struct bm *b)
{
	return (bm_bits(s, b) + 7) / 8;
}

/* Bitmap table entries a bitmap of granularity 2^gran_bits needs. */
static uint64_t needed_table_size(const struct qcow2 *s, unsigned gran_bits)
{
	uint64_t bits = (s->h.size + (1ull << gran_bits) - 1) >> gran_bits;

	return ((bits + 7) / 8 + s->cluster_size - 1) >> s->cluster_bits;
}

static uint64_t entry_size(size_t name_len, uint32_t extra)
{
	return img_align_up(BM_ENTRY_HDR + (uint64_t)extra + name_len, 8);
}

static void bm_free(struct bm *b)
{
	free(b->name);
	free(b->table);
	free(b->data);
	free(b->new_table);
	memset(b, 0, sizeof(*b));
}

/* Zeroed data for b, within the memory cap. */
static int alloc_data(struct qcow2 *s, struct bm *b)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	uint64_t size = bm_data_size(s, b) + 1;

	if (size > BM_MAX_MEM - bs->mem)
		return img_error(-ENOMEM,
				 "qcow2: bitmap '%s' needs %" PRIu64
				 " bytes of memory, over the limit of all "
				 "bitmaps (%llu)",
				 b->name, size, BM_MAX_MEM);
	b->data = calloc(1, size);
	if (!b->data)
		return img_error(-ENOMEM, "qcow2: out of memory");
	bs->mem += size;
	return 0;
}

static void free_data(struct qcow2 *s, struct bm *b)
{
	if (!b->data)
		return;
	s->bitmaps->mem -= bm_data_size(s, b) + 1;
	free(b->data);
	b->data = NULL;
}

void qcow2_bitmap_release(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;

	if (!bs)
		return;
	for (uint32_t i = 0; i < bs->n; i++)
		bm_free(&bs->bm[i]);
	for (uint32_t i = 0; i < bs->n_gone; i++)
		bm_free(&bs->gone[i]);
	free(bs->bm);
	free(bs->gone);
	free(bs);
	s->bitmaps = NULL;
}

/* ---- parsing ---- */

static int check_range(struct qcow2 *s, uint64_t off, uint64_t len,
		       uint64_t file_size, const char *what, const char *name)
{
	if (off & (s->cluster_size - 1))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %s of bitmap '%s' at %#" PRIx64
				 " is not cluster aligned",
				 what, name, off);
	if (off == 0 || off > file_size || len > file_size - off)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %s of bitmap '%s' at %#" PRIx64
				 " (%" PRIu64
				 " bytes) is outside the image file",
				 what, name, off, len);
	return 0;
}

/* Read and validate a bitmap table (host endian into *out). */
static int load_table(struct qcow2 *s, struct bm *b, uint64_t file_size,
		      uint64_t **out)
{
	uint64_t bytes = (uint64_t)b->table_size * 8;
	uint64_t *t;
	int ret;

	ret = check_range(s, b->table_off, bytes, file_size, "bitmap table",
			  b->name);
	if (ret < 0)
		return ret;
	ret = img_metadata_check(s->img, bytes, "a bitmap table");
	if (ret < 0)
		return ret;
	t = malloc(bytes);
	if (!t)
		return img_error(-ENOMEM, "qcow2: out of memory");
	ret = img_io_pread(s->file, t, bytes, b->table_off);
	if (ret < 0)
		goto fail;
	for (uint32_t i = 0; i < b->table_size; i++) {
		uint64_t e = img_be64(&t[i]), off = e & BM_TE_OFFSET_MASK;

		t[i] = e;
		if ((e & BM_TE_RESERVED) || (off && (e & BM_TE_ALL_ONES))) {
			ret = img_error(
				-IMG_ECORRUPT,
				"qcow2: bitmap '%s' table entry %" PRIu32
				" has reserved bits set: %#" PRIx64,
				b->name, i, e);
			goto fail;
		}
		if (off) {
			ret = check_range(s, off, s->cluster_size, file_size,
					  "data cluster", b->name);
			if (ret < 0)
				goto fail;
		}
	}
	*out = t;
	return 0;
fail:
	free(t);
	return ret;
}

/* Decode one directory entry at dir[*pos] into b (name copied). */
static int parse_entry(struct qcow2 *s, const uint8_t *dir, uint64_t dir_size,
		       uint64_t *pos, struct bm *b)
{
	const uint8_t *e = dir + *pos;
	uint32_t extra, flags;
	uint16_t name_size;
	uint64_t esize, need;
	uint8_t type;

	if (dir_size - *pos < BM_ENTRY_HDR)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap directory entry at %" PRIu64
				 " is truncated",
				 *pos);
	b->table_off = img_be64(e);
	b->table_size = img_be32(e + 8);
	flags = img_be32(e + 12);
	type = e[16];
	b->gran_bits = e[17];
	name_size = img_be16(e + 18);
	extra = img_be32(e + 20);
	esize = entry_size(name_size, extra);
	if (esize > dir_size - *pos)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap directory entry at %" PRIu64
				 " runs past the directory",
				 *pos);
	if (extra)
		return img_error(-ENOTSUP,
				 "qcow2: bitmap extra data is not supported "
				 "(entry at %" PRIu64 ", %" PRIu32 " bytes)",
				 *pos, extra);
	if (name_size == 0 || name_size > BM_MAX_NAME ||
	    memchr(e + BM_ENTRY_HDR, 0, name_size))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap directory entry at %" PRIu64
				 " has an invalid name (%u bytes)",
				 *pos, name_size);
	b->name = malloc(name_size + 1u);
	if (!b->name)
		return img_error(-ENOMEM, "qcow2: out of memory");
	memcpy(b->name, e + BM_ENTRY_HDR, name_size);
	b->name[name_size] = '\0';
	*pos += esize;

	if (flags & BM_FLAGS_RESERVED)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap '%s' has reserved flags %#x",
				 b->name, flags);
	b->flags = flags;
	if (type != BM_TYPE_DIRTY)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap '%s' has unknown type %u",
				 b->name, type);
	if (b->gran_bits < BM_MIN_GRAN_BITS || b->gran_bits > BM_MAX_GRAN_BITS)
		return img_error(-ENOTSUP,
				 "qcow2: bitmap '%s' has unsupported "
				 "granularity_bits %u",
				 b->name, b->gran_bits);
	if (b->table_size == 0 || b->table_size > BM_MAX_TABLE_SIZE ||
	    ((uint64_t)b->table_size << s->cluster_bits) > BM_MAX_PHYS_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap '%s' has an invalid "
				 "bitmap_table_size %" PRIu32,
				 b->name, b->table_size);
	need = needed_table_size(s, b->gran_bits);
	if (!bm_inconsistent(b) && b->table_size != need)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: bitmap '%s' has %" PRIu32
			" table entries, the virtual size needs %" PRIu64,
			b->name, b->table_size, need);
	return 0;
}

/* Validate the extension payload into nb, dir_size and dir_off. */
static int parse_ext(struct qcow2 *s, uint32_t *nb, uint64_t *dir_size,
		     uint64_t *dir_off)
{
	const uint8_t *p = s->bitmaps_ext;

	if (s->bitmaps_ext_len != BM_EXT_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmaps extension has length %" PRIu32
				 ", not %d",
				 s->bitmaps_ext_len, BM_EXT_SIZE);
	*nb = img_be32(p);
	*dir_size = img_be64(p + 8);
	*dir_off = img_be64(p + 16);
	if (img_be32(p + 4))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmaps extension reserved field is "
				 "%#x, not zero",
				 img_be32(p + 4));
	if (*nb == 0 || *nb > BM_MAX_BITMAPS)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmaps extension has %" PRIu32
				 " bitmaps (1 to %d allowed)",
				 *nb, BM_MAX_BITMAPS);
	if (*dir_size == 0 || *dir_size > BM_MAX_DIR_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap directory size %" PRIu64
				 " is invalid (maximum %llu)",
				 *dir_size, BM_MAX_DIR_SIZE);
	if (*dir_off == 0 || (*dir_off & (s->cluster_size - 1)))
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: invalid bitmap directory offset %#" PRIx64,
			*dir_off);
	return 0;
}

int qcow2_bitmap_open(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs;
	uint64_t dir_size = 0, dir_off = 0, file_size, pos = 0;
	uint8_t *dir = NULL;
	uint32_t nb = 0;
	int ret;

	if (!s->bitmaps_ext)
		return 0;
	if (!(s->h.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
		/* Stale: ignore it and let the next header write drop it. */
		free(s->bitmaps_ext);
		s->bitmaps_ext = NULL;
		s->bitmaps_ext_len = 0;
		return 0;
	}
	ret = parse_ext(s, &nb, &dir_size, &dir_off);
	if (ret < 0)
		return ret;
	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	if (dir_off > file_size || dir_size > file_size - dir_off)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: bitmap directory at %#" PRIx64
				 " (%" PRIu64
				 " bytes) is outside the image file",
				 dir_off, dir_size);
	bs = calloc(1, sizeof(*bs));
	if (!bs)
		return img_error(-ENOMEM, "qcow2: out of memory");
	s->bitmaps = bs;
	bs->dir_off = dir_off;
	bs->dir_size = dir_size;
	/* Each entry takes at least 32 bytes: nb is bounded by the size. */
	if ((uint64_t)nb * 32 > dir_size) {
		ret = img_error(-IMG_ECORRUPT,
				"qcow2: bitmap directory of %" PRIu64
				" bytes cannot hold %" PRIu32 " bitmaps",
				dir_size, nb);
		goto fail;
	}
	ret = img_metadata_check(s->img, dir_size, "a bitmap directory");
	if (ret < 0)
		goto fail;
	bs->bm = calloc(nb, sizeof(*bs->bm));
	dir = malloc(dir_size);
	if (!bs->bm || !dir) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto fail;
	}
	ret = img_io_pread(s->file, dir, dir_size, dir_off);
	if (ret < 0)
		goto fail;
	for (uint32_t i = 0; i < nb; i++) {
		struct bm *b = &bs->bm[i];

		bs->n = i + 1;
		ret = parse_entry(s, dir, dir_size, &pos, b);
		if (ret < 0)
			goto fail;
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(bs->bm[j].name, b->name)) {
				ret = img_error(
					-IMG_ECORRUPT,
					"qcow2: duplicate bitmap name '%s'",
					b->name);
				goto fail;
			}
		if (!bm_inconsistent(b)) {
			ret = load_table(s, b, file_size, &b->table);
			if (ret < 0)
				goto fail;
		}
	}
	if (pos != dir_size) {
		ret = img_error(-IMG_ECORRUPT,
				"qcow2: bitmap directory has %" PRIu64
				" bytes past its %" PRIu32 " entries",
				dir_size - pos, nb);
		goto fail;
	}
	free(dir);
	return 0;
fail:
	free(dir);
	qcow2_bitmap_release(s);
	return ret;
}

/* ---- bitmap data ---- */

static int load_data(struct qcow2 *s, struct bm *b)
{
	uint64_t size = bm_data_size(s, b), cs = s->cluster_size;
	uint64_t bits = bm_bits(s, b);
	int ret;

	if (b->data)
		return 0;
	ret = alloc_data(s, b);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; b->table && i < b->table_size; i++) {
		uint64_t pos = (uint64_t)i * cs, off;
		uint64_t n;

		if (pos >= size)
			break;
		n = img_min(cs, size - pos);
		off = b->table[i] & BM_TE_OFFSET_MASK;
		if (off) {
			ret = img_io_pread(s->file, b->data + pos, n, off);
			if (ret < 0) {
				free_data(s, b);
				return ret;
			}
		} else if (b->table[i] & BM_TE_ALL_ONES) {
			memset(b->data + pos, 0xff, n);
		}
	}
	/* Bits past the end must be zero; do not trust the file on it. */
	if (bits % 8)
		b->data[size - 1] &= (uint8_t)((1u << (bits % 8)) - 1);
	return 0;
}

static void set_bits(uint8_t *d, uint64_t first, uint64_t end)
{
	while (first < end && first % 8)
		d[first / 8] |= (uint8_t)(1u << (first % 8)), first++;
	if (end - first >= 8) {
		memset(d + first / 8, 0xff, (end - first) / 8);
		first += (end - first) / 8 * 8;
	}
	while (first < end)
		d[first / 8] |= (uint8_t)(1u << (first % 8)), first++;
}

static bool test_bit(const uint8_t *d, uint64_t bit)
{
	return (d[bit / 8] >> (bit % 8)) & 1;
}

/* First bit in [bit, end) whose value is not v (end if none). */
static uint64_t run_end(const uint8_t *d, uint64_t bit, uint64_t end, bool v)
{
	uint8_t same = v ? 0xff : 0;

	while (bit < end) {
		if (bit % 8 == 0 && end - bit >= 8 && d[bit / 8] == same) {
			bit += 8;
			continue;
		}
		if (test_bit(d, bit) != v)
			return bit;
		bit++;
	}
	return end;
}

/* Set the bits covering guest bytes [off, off + len) in a loaded bitmap. */
static void mark_range(struct qcow2 *s, struct bm *b, uint64_t off,
		       uint64_t len)
{
	uint64_t end = img_min(off + len, s->h.size);

	if (off >= end)
		return;
	set_bits(b->data, off >> b->gran_bits, ((end - 1) >> b->gran_bits) + 1);
	b->modified = true;
}

/* ---- storing ---- */

/* Encode the directory; in_use is added to tracked bitmaps if tracking. */
static int encode_dir(struct qcow2 *s, uint8_t **out, uint64_t *size)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	uint64_t total = 0, pos = 0;
	uint8_t *dir;

	for (uint32_t i = 0; i < bs->n; i++)
		total += entry_size(strlen(bs->bm[i].name), 0);
	if (total > BM_MAX_DIR_SIZE)
		return img_error(-EINVAL,
				 "qcow2: bitmap directory is too large");
	dir = calloc(1, total ? total : 1);
	if (!dir)
		return img_error(-ENOMEM, "qcow2: out of memory");
	for (uint32_t i = 0; i < bs->n; i++) {
		const struct bm *b = &bs->bm[i];
		size_t nl = strlen(b->name);
		uint32_t flags = b->flags;
		uint8_t *e = dir + pos;

		if ((bs->tracking && bm_tracked(b)) || bs->resizing)
			flags |= BM_FLAG_IN_USE;
		img_put_be64(e, b->new_table ? b->new_table_off : b->table_off);
		img_put_be32(e + 8,
			     b->new_table ? b->new_table_size : b->table_size);
		img_put_be32(e + 12, flags);
		e[16] = BM_TYPE_DIRTY;
		e[17] = b->gran_bits;
		img_put_be16(e + 18, (uint16_t)nl);
		memcpy(e + BM_ENTRY_HDR, b->name, nl);
		pos += entry_size(nl, 0);
	}
	*out = dir;
	*size = total;
	return 0;
}

/* Free the clusters of a table (host endian entries) and the table. */
static void free_table(struct qcow2 *s, uint64_t table_off, uint32_t n,
		       const uint64_t *t)
{
	for (uint32_t i = 0; t && i < n; i++) {
		uint64_t off = t[i] & BM_TE_OFFSET_MASK;

		if (off)
			(void)qcow2_free_clusters_now(s, off, s->cluster_size);
	}
	if (table_off && n)
		(void)qcow2_free_clusters_now(s, table_off, (uint64_t)n * 8);
}

static void drop_staged(struct qcow2 *s, struct bm *b)
{
	if (!b->new_table)
		return;
	free_table(s, b->new_table_off, b->new_table_size, b->new_table);
	free(b->new_table);
	b->new_table = NULL;
}

/* Write b's data and a new table to fresh clusters (staged in b->new_*). */
static int store_data(struct qcow2 *s, struct bm *b)
{
	uint64_t cs = s->cluster_size, size = bm_data_size(s, b);
	uint64_t n = needed_table_size(s, b->gran_bits), bytes = n * 8;
	uint8_t *buf = NULL;
	uint64_t *t;
	int ret;

	if (n == 0 || n > BM_MAX_TABLE_SIZE || n * cs > BM_MAX_PHYS_SIZE)
		return img_error(-EINVAL, "qcow2: bitmap '%s' is too big",
				 b->name);
	t = calloc(n, 8);
	buf = malloc(img_align_up(bytes, cs));
	b->new_table = t;
	b->new_table_size = (uint32_t)n;
	b->new_table_off = 0;
	if (!t || !buf) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto fail;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pos = i * cs, len = img_min(cs, size - pos), off;

		if (img_is_zero(b->data + pos, len))
			continue;
		ret = qcow2_alloc_clusters(s, 1, &off);
		if (ret < 0)
			goto fail;
		t[i] = off;
		memcpy(buf, b->data + pos, len);
		memset(buf + len, 0, cs - len);
		ret = img_io_pwrite(s->file, buf, cs, off);
		if (ret < 0)
			goto fail;
	}
	ret = qcow2_alloc_clusters(s, img_align_up(bytes, cs) / cs,
				   &b->new_table_off);
	if (ret < 0)
		goto fail;
	memset(buf, 0, img_align_up(bytes, cs));
	for (uint64_t i = 0; i < n; i++)
		img_put_be64(buf + i * 8, t[i]);
	ret = img_io_pwrite(s->file, buf, bytes, b->new_table_off);
	if (ret < 0)
		goto fail;
	free(buf);
	return 0;
fail:
	free(buf);
	drop_staged(s, b);
	return ret;
}

/* Point the header at a new directory (or none), flushed; frees nothing. */
static int write_header(struct qcow2 *s, uint64_t dir_off, uint64_t dir_size)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	uint8_t *old_ext = s->bitmaps_ext, *ext = NULL;
	uint32_t old_len = s->bitmaps_ext_len;
	uint64_t old_auto = s->h.autoclear_features;
	int ret;

	if (bs->n) {
		ext = calloc(1, BM_EXT_SIZE);
		if (!ext)
			return img_error(-ENOMEM, "qcow2: out of memory");
		img_put_be32(ext, bs->n);
		img_put_be64(ext + 8, dir_size);
		img_put_be64(ext + 16, dir_off);
		s->h.autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
	} else {
		s->h.autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
	}
	s->bitmaps_ext = ext;
	s->bitmaps_ext_len = ext ? BM_EXT_SIZE : 0;
	ret = qcow2_header_write(s, s->backing_name);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret < 0) {
		free(ext);
		s->bitmaps_ext = old_ext;
		s->bitmaps_ext_len = old_len;
		s->h.autoclear_features = old_auto;
		return ret;
	}
	free(old_ext);
	return 0;
}

/*
 * Store every modified bitmap, write a new directory without our in_use
 * flags and switch the header to it; then free what is no longer named.
 */
static int sync_all(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	uint64_t dir_off = 0, dir_size = 0, old_off = bs->dir_off,
		 old_size = bs->dir_size;
	uint8_t *dir = NULL;
	bool was_tracking = bs->tracking, was_resizing = bs->resizing;
	int ret;

	for (uint32_t i = 0; i < bs->n; i++) {
		struct bm *b = &bs->bm[i];

		if (!b->modified || bm_inconsistent(b))
			continue;
		ret = store_data(s, b);
		if (ret < 0)
			goto fail;
	}
	bs->tracking = false;
	bs->resizing = false;
	ret = encode_dir(s, &dir, &dir_size);
	if (ret < 0)
		goto fail;
	if (dir_size) {
		ret = qcow2_alloc_clusters(s,
					   img_align_up(dir_size,
							s->cluster_size) >>
						   s->cluster_bits,
					   &dir_off);
		if (ret < 0)
			goto fail;
		ret = img_io_pwrite(s->file, dir, dir_size, dir_off);
		if (ret < 0)
			goto fail;
	}
	/* Refcounts, data, tables and directory stable before the header. */
	ret = qcow2_refcount_sync(s);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret == 0)
		ret = write_header(s, dir_off, dir_size);
	if (ret < 0)
		goto fail;
	free(dir);
	bs->dir_off = dir_off;
	bs->dir_size = dir_size;
	if (old_size)
		(void)qcow2_free_clusters_now(s, old_off, old_size);
	for (uint32_t i = 0; i < bs->n; i++) {
		struct bm *b = &bs->bm[i];

		if (!b->new_table)
			continue;
		free_table(s, b->table_off, b->table_size, b->table);
		free(b->table);
		b->table = b->new_table;
		b->table_off = b->new_table_off;
		b->table_size = b->new_table_size;
		b->new_table = NULL;
		b->modified = false;
	}
	for (uint32_t i = 0; i < bs->n_gone; i++) {
		struct bm *b = &bs->gone[i];

		free_table(s, b->table_off, b->table_size, b->table);
		free_data(s, b);
		bm_free(b);
	}
	bs->n_gone = 0;
	return 0;
fail:
	if (dir_size && dir_off)
		(void)qcow2_free_clusters_now(s, dir_off, dir_size);
	free(dir);
	for (uint32_t i = 0; i < bs->n; i++)
		drop_staged(s, &bs->bm[i]);
	bs->tracking = was_tracking;
	bs->resizing = was_resizing;
	return ret;
}

int qcow2_bitmap_flush(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	bool dirty = false;

	if (!bs || s->read_only)
		return 0;
	for (uint32_t i = 0; i < bs->n; i++)
		dirty |= bs->bm[i].modified;
	if (!dirty && !bs->tracking && !bs->n_gone)
		return 0;
	return sync_all(s);
}

/* Rewrite the directory in place (only flags change), flushed. */
static int write_dir_in_place(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	uint8_t *dir;
	uint64_t size;
	int ret;

	ret = encode_dir(s, &dir, &size);
	if (ret < 0)
		return ret;
	if (size != bs->dir_size)
		ret = img_error(-EIO, "qcow2: bitmap directory size changed");
	else
		ret = img_io_pwrite(s->file, dir, size, bs->dir_off);
	free(dir);
	if (ret == 0)
		ret = img_io_flush(s->file);
	return ret;
}

/* Set in_use on the tracked bitmaps in the directory, in place, flushed. */
static int start_tracking(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	int ret;

	for (uint32_t i = 0; i < bs->n; i++) {
		if (!bm_tracked(&bs->bm[i]))
			continue;
		ret = load_data(s, &bs->bm[i]);
		if (ret < 0)
			return ret;
	}
	bs->tracking = true;
	ret = write_dir_in_place(s);
	if (ret < 0)
		bs->tracking = false;
	return ret;
}

int qcow2_bitmap_resize_begin(struct qcow2 *s)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	int ret;

	if (!bs || !bs->n)
		return 0;
	for (uint32_t i = 0; i < bs->n; i++)
		if (bm_inconsistent(&bs->bm[i]))
			return img_error(-ENOTSUP,
					 "qcow2: cannot resize: bitmap '%s' is "
					 "inconsistent (remove it first)",
					 bs->bm[i].name);
	for (uint32_t i = 0; i < bs->n; i++) {
		ret = load_data(s, &bs->bm[i]);
		if (ret < 0)
			return ret;
	}
	bs->resizing = true;
	ret = write_dir_in_place(s);
	if (ret < 0)
		bs->resizing = false;
	return ret;
}

int qcow2_bitmap_resize_end(struct qcow2 *s, uint64_t old_size)
{
	struct qcow2_bitmaps *bs = s->bitmaps;

	if (!bs || !bs->resizing)
		return 0;
	for (uint32_t i = 0; i < bs->n; i++) {
		struct bm *b = &bs->bm[i];
		uint64_t g = 1ull << b->gran_bits;
		uint64_t old = (((old_size + g - 1) >> b->gran_bits) + 7) / 8;
		uint64_t now = bm_data_size(s, b), bits = bm_bits(s, b);
		uint8_t *d = NULL;

		if (now + 1 <= BM_MAX_MEM - (bs->mem - old - 1))
			d = realloc(b->data, now + 1);
		if (!d) {
			/* Left in use: the size on disk no longer fits it. */
			free_data(s, b);
			b->flags |= BM_FLAG_IN_USE;
			continue;
		}
		bs->mem = bs->mem - old + now;
		if (now > old)
			memset(d + old, 0, now - old);
		d[now] = 0;
		if (bits % 8)
			d[now - 1] &= (uint8_t)((1u << (bits % 8)) - 1);
		b->data = d;
		b->modified = true;
	}
	return sync_all(s);
}

int qcow2_bitmap_mark(struct qcow2 *s, uint64_t off, uint64_t len)
{
	struct qcow2_bitmaps *bs = s->bitmaps;
	bool any = false;
	int ret;

	if (!bs)
		return 0;
	for (uint32_t i = 0; i < bs->n && !any; i++)
		any = bm_tracked(&bs->bm[i]);
	if (!any)
		return 0;
	if (!bs->tracking) {
		ret = start_tracking(s);
		if (ret < 0)
			return ret;
	}
	for (uint32_t i = 0; i < bs->n; i++)
		if (bm_tracked(&bs->bm[i]))
			mark_range(s, &bs->bm[i], off, len);
	return 0;
}

/* ---- operations (struct img_bitmap_ops) ---- */

static struct bm *find(struct qcow2 *s, const char *name)
{
	struct qcow2_bitmaps *bs = s->bitmaps;

	for (uint32_t i = 0; bs && i < bs->n; i++)
		if (!strcmp(bs->bm[i].name, name))
			return &bs->bm[i];
	return NULL;
}

static int find_usable(struct qcow2 *s, const char *name, struct bm **out)
{
	struct bm *b = find(s, name);

	if (!b)
		return img_error(-ENOENT, "qcow2: dirty bitmap '%s' not found",
				 name);
	if (bm_inconsistent(b))
		return img_error(
			-EINVAL,
			"qcow2: bitmap '%s' is inconsistent and cannot "
			"be used",
			name);
	*out = b;
	return 0;
}

static int qcow2_bm_list(struct img *img, struct img_bitmap_info **out,
			 size_t *n)
{
	struct qcow2 *s = img_priv(img);
	struct qcow2_bitmaps *bs = s->bitmaps;
	struct img_bitmap_info *l;
	uint32_t cnt = bs ? bs->n : 0;

	/* v2 cannot store bitmaps at all (measure, convert --bitmaps ask). */
	if (s->h.version < 3)
		return img_error(-ENOTSUP, "qcow2: cannot store dirty bitmaps "
					   "in qcow2 v2 files");
	l = calloc(cnt ? cnt : 1, sizeof(*l));
	if (!l)
		return img_error(-ENOMEM, "qcow2: out of memory");
	for (uint32_t i = 0; i < cnt; i++) {
		const struct bm *b = &bs->bm[i];

		l[i].name = strdup(b->name);
		if (!l[i].name) {
			img_bitmap_list_free(l, i);
			return img_error(-ENOMEM, "qcow2: out of memory");
		}
		l[i].granularity = 1ull << b->gran_bits;
		if (bm_inconsistent(b) || (bs->tracking && bm_tracked(b)))
			l[i].flags |= IMG_BITMAP_IN_USE;
		if (b->flags & BM_FLAG_AUTO)
			l[i].flags |= IMG_BITMAP_AUTO;
	}
	*out = l;
	*n = cnt;
	return 0;
}

static int qcow2_bm_add(struct img *img, const char *name, uint64_t granularity,
			bool disabled)
{
	struct qcow2 *s = img_priv(img);
	struct qcow2_bitmaps *bs = s->bitmaps;
	struct bm *b, *arr;
	unsigned bits = 0;
	uint64_t need;
	int ret;

	if (s->h.version < 3)
		return img_error(-ENOTSUP, "qcow2: cannot store dirty bitmaps "
					   "in qcow2 v2 files");
	if (find(s, name))
		return img_error(-EEXIST, "qcow2: bitmap already exists: %s",
				 name);
	if (!granularity)
		granularity = img_min(
			65536, s->cluster_size < 4096 ? 4096 : s->cluster_size);
	while ((1ull << bits) < granularity)
		bits++;
	need = needed_table_size(s, bits);
	if (need == 0)
		return img_error(-EINVAL, "qcow2: cannot add a bitmap to an "
					  "image of size 0");
	if (need > BM_MAX_TABLE_SIZE ||
	    (need << s->cluster_bits) > BM_MAX_PHYS_SIZE)
		return img_error(-EINVAL, "qcow2: too much space will be "
					  "occupied by the bitmap; use a "
					  "larger granularity");
	if (!bs) {
		bs = calloc(1, sizeof(*bs));
		if (!bs)
			return img_error(-ENOMEM, "qcow2: out of memory");
		s->bitmaps = bs;
	}
	if (bs->n >= BM_MAX_BITMAPS)
		return img_error(-EINVAL, "qcow2: too many persistent bitmaps");
	arr = realloc(bs->bm, (bs->n + 1) * sizeof(*arr));
	if (!arr)
		return img_error(-ENOMEM, "qcow2: out of memory");
	bs->bm = arr;
	b = &arr[bs->n];
	memset(b, 0, sizeof(*b));
	b->gran_bits = (uint8_t)bits;
	b->flags = disabled ? 0 : BM_FLAG_AUTO;
	b->modified = true;
	b->name = strdup(name);
	if (!b->name)
		return img_error(-ENOMEM, "qcow2: out of memory");
	ret = alloc_data(s, b);
	if (ret < 0) {
		bm_free(b);
		return ret;
	}
	bs->n++;
	ret = sync_all(s);
	if (ret < 0) {
		bs->n--;
		free_data(s, b);
		bm_free(b);
	}
	return ret;
}

static int qcow2_bm_remove(struct img *img, const char *name)
{
	struct qcow2 *s = img_priv(img);
	struct qcow2_bitmaps *bs = s->bitmaps;
	struct bm *b = find(s, name), *g;
	uint32_t idx;
	int ret;

	if (!b)
		return img_error(-ENOENT, "qcow2: dirty bitmap '%s' not found",
				 name);
	if (!b->table && b->table_off) {
		uint64_t file_size;

		/* An inconsistent bitmap: free its data only if the table
		 * is sound, else leave the clusters leaked. */
		if (img_io_size(s->file, &file_size) == 0 &&
		    load_table(s, b, file_size, &b->table) < 0)
			img_clear_error();
	}
	g = realloc(bs->gone, (bs->n_gone + 1) * sizeof(*g));
	if (!g)
		return img_error(-ENOMEM, "qcow2: out of memory");
	bs->gone = g;
	idx = (uint32_t)(b - bs->bm);
	g[bs->n_gone++] = *b;
	memmove(b, b + 1, (bs->n - idx - 1) * sizeof(*b));
	bs->n--;
	ret = sync_all(s);
	if (ret < 0) {
		/* Put it back where it was. */
		bs->n_gone--;
		memmove(&bs->bm[idx + 1], &bs->bm[idx],
			(bs->n - idx) * sizeof(*b));
		bs->bm[idx] = g[bs->n_gone];
		bs->n++;
	}
	return ret;
}

static int qcow2_bm_clear(struct img *img, const char *name)
{
	struct qcow2 *s = img_priv(img);
	struct bm *b;
	int ret = find_usable(s, name, &b);

	if (ret < 0)
		return ret;
	if (!b->data) {
		ret = alloc_data(s, b);
		if (ret < 0)
			return ret;
	}
	memset(b->data, 0, bm_data_size(s, b));
	b->modified = true;
	return sync_all(s);
}

static int qcow2_bm_enable(struct img *img, const char *name, bool enable)
{
	struct qcow2 *s = img_priv(img);
	struct bm *b;
	uint32_t old;
	int ret = find_usable(s, name, &b);

	if (ret < 0)
		return ret;
	/* Tracking starts or ends with the next write. */
	if (s->bitmaps->tracking) {
		ret = sync_all(s);
		if (ret < 0)
			return ret;
	}
	old = b->flags;
	if (enable)
		b->flags |= BM_FLAG_AUTO;
	else
		b->flags &= ~BM_FLAG_AUTO;
	ret = sync_all(s);
	if (ret < 0)
		b->flags = old;
	return ret;
}

static int qcow2_bm_set_dirty(struct img *img, const char *name, uint64_t off,
			      uint64_t len)
{
	struct qcow2 *s = img_priv(img);
	struct bm *b;
	int ret = find_usable(s, name, &b);

	if (ret == 0)
		ret = load_data(s, b);
	if (ret < 0)
		return ret;
	mark_range(s, b, off, len);
	return 0;
}

static int qcow2_bm_dirty(struct img *img, const char *name, uint64_t off,
			  uint64_t len, bool *dirty, uint64_t *run_len)
{
	struct qcow2 *s = img_priv(img);
	uint64_t bit, end_bit, stop;
	struct bm *b;
	bool v;
	int ret = find_usable(s, name, &b);

	if (ret == 0)
		ret = load_data(s, b);
	if (ret < 0)
		return ret;
	bit = off >> b->gran_bits;
	end_bit = ((off + len - 1) >> b->gran_bits) + 1;
	v = test_bit(b->data, bit);
	stop = run_end(b->data, bit + 1, end_bit, v);
	*dirty = v;
	*run_len = img_min(stop << b->gran_bits, off + len) - off;
	return 0;
}

const struct img_bitmap_ops qcow2_bitmap_ops = {
	.list = qcow2_bm_list,
	.add = qcow2_bm_add,
	.remove = qcow2_bm_remove,
	.clear = qcow2_bm_clear,
	.enable = qcow2_bm_enable,
	.set_dirty = qcow2_bm_set_dirty,
	.dirty = qcow2_bm_dirty,
};
