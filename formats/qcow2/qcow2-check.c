/* SPDX-License-Identifier: MIT */
/*
 * qcow2 consistency check and repair, and the refcount rebuild. The check
 * recomputes the refcount every host cluster of the image file should have
 * from all metadata (header cluster, active and snapshot L1/L2 tables and the
 * data and compressed clusters they map, the snapshot table, the refcount
 * table and blocks, the LUKS header, the bitmap directory and tables) and
 * compares it with the stored refcounts, as QEMU 7.2's qcow2_check_refcounts
 * does, so that the counts it reports (corruptions, leaks, allocated,
 * fragmented and compressed clusters, image end offset) are qemu-img check's.
 * It also checks L1/L2 entries (alignment, reserved bits, subcluster bitmaps)
 * and the COPIED flags.
 *
 * Every table is read from the file and bounds-checked; the expected-refcount
 * array holds one uint32_t per host cluster and is capped at
 * CHECK_MAX_CLUSTERS entries.
 *
 * Repairs bypass the driver's metadata caches: dirty tables are written back
 * first, changed tables are written directly and dropped from the caches.
 * Crash safety: leak and COPIED fixes change one table at a time and never
 * make a reference point to a cluster that is not counted. A rebuild writes
 * the new refcount blocks and table beyond the current end of the file (never
 * over anything referenced), flushes, switches the header's
 * refcount_table_offset/refcount_table_clusters with one 12-byte write inside
 * the first sector, and flushes again; the old structures become leaks that a
 * second pass frees. A crash at any point leaves either the old or the new
 * refcount structures in force, each consistent with the metadata.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Largest expected-refcount array (entries = host clusters) we allocate. */
#define CHECK_MAX_CLUSTERS (1ull << 26)

/* QEMU's limits on the snapshot table. */
#define MAX_SNAPSHOTS 65536
#define MAX_SNAPSHOTS_SIZE (1024ull * MAX_SNAPSHOTS)
#define SNAPSHOT_HEADER_SIZE 40

/* Extended L2 subcluster bitmap halves. */
#define L2_BITMAP_ALL_ALLOC 0xffffffffull
#define L2_BITMAP_ALL_ZEROES 0xffffffff00000000ull

/* Bitmap directory (QCOW2_EXT_BITMAPS) limits and table entry bits. */
#define BME_MAX_TABLE_BYTES (64ull << 20)
#define BME_MAX_DIR_BYTES (64ull << 20)
#define BME_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_RESERVED 0xff000000000001feull
#define BME_ALL_ONES 1ull

/* Header offset of refcount_table_offset and refcount_table_clusters. */
#define HDR_REFTABLE_OFFSET 48

struct snapshot {
	uint64_t l1_off;
	uint32_t l1_size;
	char id[32];
	char name[64];
};

struct check {
	struct qcow2 *s;
	struct img_check *res;
	uint64_t cs; /* cluster size */
	uint64_t file_size; /* of the image file */
	uint64_t data_size; /* of the file holding the data clusters */
	bool has_data_file;
	uint32_t rc_max; /* largest expected refcount we store */

	uint32_t *rc; /* expected refcount per host cluster */
	uint64_t nb; /* valid entries in rc */
	uint64_t cap; /* allocated entries in rc */

	struct snapshot *snaps;
	uint32_t n_snaps;
	uint64_t snapshots_size;

	uint8_t *l2; /* one L2 table */
	uint8_t *rb; /* the stored refcount block in rb_off */
	uint64_t rb_off;
	bool rb_valid, rb_dirty;
};

__attribute__((format(printf, 2, 3))) static void report(struct check *c,
							 const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!c->res->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->res->report(c->res->opaque, line);
}

/* ---- refcount entries in an on-disk refcount block ---- */

static uint64_t rb_get(const uint8_t *b, uint64_t i, unsigned order)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << order;
		uint64_t bit = i * bits;

		return (uint64_t)(b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
	}
	case 3:
		return b[i];
	case 4:
		return img_be16(b + 2 * i);
	case 5:
		return img_be32(b + 4 * i);
	default:
		return img_be64(b + 8 * i);
	}
}

static void rb_set(uint8_t *b, uint64_t i, unsigned order, uint64_t v)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << order;
		uint64_t bit = i * bits;
		unsigned mask = ((1u << bits) - 1) << (bit % 8);

		b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) |
				       ((v << (bit % 8)) & mask));
		break;
	}
	case 3:
		b[i] = (uint8_t)v;
		break;
	case 4:
		img_put_be16(b + 2 * i, (uint16_t)v);
		break;
	case 5:
		img_put_be32(b + 4 * i, (uint32_t)v);
		break;
	default:
		img_put_be64(b + 8 * i, v);
		break;
	}
}

/* ---- the expected-refcount array ---- */

static int rc_grow(struct check *c, uint64_t n)
{
	uint64_t cap;
	uint32_t *p;

	if (n <= c->nb)
		return 0;
	if (n > c->cap) {
		cap = c->cap ? c->cap : 1024;
		while (cap < n)
			cap *= 2;
		if (cap > CHECK_MAX_CLUSTERS)
			cap = n;
		p = realloc(c->rc, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		memset(p + c->cap, 0, (cap - c->cap) * sizeof(*p));
		c->rc = p;
		c->cap = cap;
	}
	c->nb = n;
	return 0;
}

/* Count one more reference to every cluster that [off, off + len) touches. */
static void inc_refs(struct check *c, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!len)
		return;
	/* The last cluster may be partly past the end of the file; a region
	 * reaching a whole cluster past it is corrupt (QEMU's rule). */
	if (off > UINT64_MAX - len ||
	    (off + len > c->file_size && off + len - c->file_size >= c->cs)) {
		report(c,
		       "ERROR: counting reference for region exceeding the end "
		       "of the file by one cluster or more: offset 0x%" PRIx64
		       " size 0x%" PRIx64,
		       off, len);
		c->res->corruptions++;
		return;
	}
	first = off / c->cs;
	last = (off + len - 1) / c->cs;
	for (uint64_t k = first; k <= last; k++) {
		if (k >= CHECK_MAX_CLUSTERS) {
			report(c,
			       "ERROR reference to cluster %" PRIu64
			       " (offset %#" PRIx64
			       ") is beyond the check's limit",
			       k, k * c->cs);
			c->res->check_errors++;
			return;
		}
		if (k >= c->nb && rc_grow(c, k + 1) < 0) {
			report(c, "ERROR out of memory counting references");
			c->res->check_errors++;
			return;
		}
		if (c->rc[k] >= c->rc_max) {
			report(c, "ERROR: overflow cluster offset=0x%" PRIx64,
			       k * c->cs);
			c->res->corruptions++;
			continue;
		}
		c->rc[k]++;
	}
}

/* ---- the stored refcounts (read around the driver's cache) ---- */

static int rb_flush(struct check *c)
{
	struct qcow2 *s = c->s;
	int ret;

	if (!c->rb_dirty)
		return 0;
	ret = img_io_pwrite(s->file, c->rb, c->cs, c->rb_off);
	if (ret < 0)
		return ret;
	c->rb_dirty = false;
	if (s->refblock_cache)
		img_cache_forget(s->refblock_cache, c->rb_off);
	return 0;
}

/* Load the refcount block covering cluster k; *idx is k's index in it.
 * Returns 0 with c->rb_valid false when no block is allocated. */
static int rb_load(struct check *c, uint64_t k, uint64_t *idx)
{
	struct qcow2 *s = c->s;
	uint64_t ti = k / s->refblock_entries, off;
	int ret;

	*idx = k % s->refblock_entries;
	if (ti >= s->reftable_size)
		goto none;
	off = s->reftable[ti] & QCOW2_REFT_OFFSET_MASK;
	if (!off)
		goto none;
	if (off % c->cs)
		return -EIO;
	if (c->rb_valid && c->rb_off == off)
		return 0;
	ret = rb_flush(c);
	if (ret < 0)
		return ret;
	c->rb_valid = false;
	ret = img_io_pread(s->file, c->rb, c->cs, off);
	if (ret < 0)
		return ret;
	c->rb_off = off;
	c->rb_valid = true;
	return 0;
none:
	ret = rb_flush(c);
	if (ret < 0)
		return ret;
	c->rb_valid = false;
	return 0;
}

static int stored_refcount(struct check *c, uint64_t k, uint64_t *rc)
{
	uint64_t idx;
	int ret = rb_load(c, k, &idx);

	if (ret < 0)
		return ret;
	*rc = c->rb_valid ? rb_get(c->rb, idx, c->s->h.refcount_order) : 0;
	return 0;
}

/* Set the stored refcount of cluster k, whose block must exist. */
static int set_stored_refcount(struct check *c, uint64_t k, uint64_t v)
{
	struct qcow2 *s = c->s;
	uint64_t idx;
	int ret = rb_load(c, k, &idx);

	if (ret < 0)
		return ret;
	if (!c->rb_valid)
		return -EIO;
	rb_set(c->rb, idx, s->h.refcount_order, v);
	c->rb_dirty = true;
	if (!v) {
		if (s->l2_cache)
			img_cache_forget(s->l2_cache, k * c->cs);
		if (s->refblock_cache)
			img_cache_forget(s->refblock_cache, k * c->cs);
		if (k < s->free_cluster_hint)
			s->free_cluster_hint = k;
	}
	return 0;
}

static void rb_invalidate(struct check *c)
{
	c->rb_valid = false;
	c->rb_dirty = false;
}

/* ---- L1 and L2 tables ---- */

static enum qcow2_cluster_type cluster_type(struct check *c, uint64_t l2e)
{
	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_CLUSTER_COMPRESSED;
	if ((l2e & QCOW2_OFLAG_ZERO) && !c->s->extended_l2)
		return (l2e & QCOW2_L2E_OFFSET_MASK) ?
			       QCOW2_CLUSTER_ZERO_ALLOC :
			       QCOW2_CLUSTER_ZERO_PLAIN;
	if (!(l2e & QCOW2_L2E_OFFSET_MASK)) {
		/* Offset 0 is valid in a data file; COPIED tells it apart. */
		if (c->has_data_file && (l2e & QCOW2_OFLAG_COPIED))
			return QCOW2_CLUSTER_NORMAL;
		return QCOW2_CLUSTER_UNALLOCATED;
	}
	return QCOW2_CLUSTER_NORMAL;
}

/* Host byte range of a compressed cluster descriptor (the spec's layout). */
static void compressed_range(struct check *c, uint64_t l2e, uint64_t *off,
			     uint64_t *len)
{
	unsigned x = 62 - (c->s->cluster_bits - 8);
	uint64_t sectors;

	*off = l2e & ((1ull << x) - 1);
	sectors = ((l2e >> x) & ((1ull << (c->s->cluster_bits - 8)) - 1)) + 1;
	*len = sectors * 512 - (*off & 511);
}

/* Rewrite an unaligned preallocated zero cluster as a plain zero cluster. */
static int fix_l2_entry_by_zero(struct check *c, uint64_t l2_off, uint64_t i)
{
	struct qcow2 *s = c->s;
	uint8_t *e = c->l2 + i * s->l2_entry_size;
	int ret;

	if (s->extended_l2) {
		uint64_t bitmap = img_be64(e + 8);

		bitmap |= bitmap << 32;
		bitmap &= L2_BITMAP_ALL_ZEROES;
		img_put_be64(e, 0);
		img_put_be64(e + 8, bitmap);
	} else {
		img_put_be64(e, QCOW2_OFLAG_ZERO);
	}
	ret = img_io_pwrite(s->file, e, s->l2_entry_size,
			    l2_off + i * s->l2_entry_size);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (s->l2_cache)
		img_cache_forget(s->l2_cache, l2_off);
	if (ret < 0) {
		report(c, "ERROR: Failed to overwrite L2 table entry: %s",
		       strerror(-ret));
		c->res->check_errors++;
		return ret;
	}
	c->res->corruptions--;
	c->res->corruptions_fixed++;
	return 0;
}

/*
 * Data the L2 entry says is stored at host offset off must be in the file:
 * reads of it fail (img_data_check). A cluster a whole cluster or more past
 * the end is already reported by inc_refs with QEMU's message; this adds the
 * cluster the file ends inside (QEMU reads its tail as zeroes and calls it
 * clean) and data files. With subclusters only the allocated ones count.
 */
static void check_data_end(struct check *c, uint64_t off, uint64_t bitmap)
{
	uint64_t end = off + c->cs;

	if (c->s->extended_l2) {
		uint32_t alloc = (uint32_t)(bitmap & L2_BITMAP_ALL_ALLOC);
		unsigned last;

		if (!alloc)
			return;
		last = 31u - (unsigned)__builtin_clz(alloc);
		end = off + (((uint64_t)last + 1) << c->s->subcluster_bits);
	}
	if (end <= c->data_size)
		return;
	if (!c->has_data_file && off + c->cs - c->file_size >= c->cs)
		return;
	report(c,
	       "ERROR offset=%" PRIx64
	       ": data cluster ends past the end of the %sfile (size %" PRIu64
	       "); its data is lost",
	       off, c->has_data_file ? "data " : "", c->data_size);
	c->res->corruptions++;
}

static int check_l2(struct check *c, uint64_t l2_off, bool active, unsigned fix)
{
	struct qcow2 *s = c->s;
	struct img_check *res = c->res;
	uint64_t next_contiguous = 0;
	int ret;

	ret = img_io_pread(s->file, c->l2, c->cs, l2_off);
	if (ret < 0) {
		report(c, "ERROR: I/O error in check_refcounts_l2");
		res->check_errors++;
		return ret;
	}
	for (uint64_t i = 0; i < s->l2_entries; i++) {
		const uint8_t *e = c->l2 + i * s->l2_entry_size;
		uint64_t l2e = img_be64(e);
		uint64_t bitmap = s->extended_l2 ? img_be64(e + 8) : 0;
		enum qcow2_cluster_type type = cluster_type(c, l2e);
		uint64_t off, len;

		if (type != QCOW2_CLUSTER_COMPRESSED &&
		    (l2e & QCOW2_L2E_STD_RESERVED)) {
			report(c,
			       "ERROR found l2 entry with reserved bits set: "
			       "%" PRIx64,
			       l2e);
			res->corruptions++;
		}
		switch (type) {
		case QCOW2_CLUSTER_COMPRESSED:
			if (l2e & QCOW2_OFLAG_COPIED) {
				compressed_range(c, l2e & ~QCOW2_OFLAG_COPIED,
						 &off, &len);
				report(c,
				       "ERROR: coffset=0x%" PRIx64
				       ": copied flag must never be set for "
				       "compressed clusters",
				       off);
				l2e &= ~QCOW2_OFLAG_COPIED;
				res->corruptions++;
			}
			if (c->has_data_file) {
				report(c,
				       "ERROR compressed cluster %" PRIu64
				       " with data file, entry=0x%" PRIx64,
				       i, l2e);
				res->corruptions++;
				break;
			}
			if (bitmap) {
				report(c,
				       "ERROR compressed cluster %" PRIu64
				       " with non-zero subcluster allocation "
				       "bitmap, entry=0x%" PRIx64,
				       i, l2e);
				res->corruptions++;
				break;
			}
			compressed_range(c, l2e, &off, &len);
			inc_refs(c, off, len);
			if (active) {
				res->allocated_clusters++;
				res->compressed_clusters++;
				res->fragmented_clusters++;
			}
			break;
		case QCOW2_CLUSTER_ZERO_ALLOC:
		case QCOW2_CLUSTER_NORMAL:
			off = l2e & QCOW2_L2E_OFFSET_MASK;
			if ((bitmap >> 32) & bitmap) {
				res->corruptions++;
				report(c,
				       "ERROR offset=%" PRIx64
				       ": Allocated cluster has corrupted "
				       "subcluster allocation bitmap",
				       off);
			}
			if (off % c->cs) {
				bool data = s->extended_l2 ?
						    (bitmap &
						     L2_BITMAP_ALL_ALLOC) != 0 :
						    !(l2e & QCOW2_OFLAG_ZERO);

				res->corruptions++;
				if (data) {
					report(c,
					       "ERROR offset=%" PRIx64
					       ": Data cluster is not properly "
					       "aligned; L2 entry corrupted.",
					       off);
				} else {
					report(c,
					       "%s offset=%" PRIx64
					       ": Preallocated cluster is not "
					       "properly aligned; L2 entry "
					       "corrupted.",
					       (fix & IMG_CHECK_FIX_ERRORS) ?
						       "Repairing" :
						       "ERROR",
					       off);
					if ((fix & IMG_CHECK_FIX_ERRORS) &&
					    fix_l2_entry_by_zero(c, l2_off,
								 i) == 0)
						continue;
				}
			}
			if (type == QCOW2_CLUSTER_NORMAL)
				check_data_end(c, off, bitmap);
			if (active) {
				res->allocated_clusters++;
				if (next_contiguous && off != next_contiguous)
					res->fragmented_clusters++;
				next_contiguous = off + c->cs;
			}
			if (!c->has_data_file)
				inc_refs(c, off, c->cs);
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
			break;
		case QCOW2_CLUSTER_UNALLOCATED:
			if (bitmap & L2_BITMAP_ALL_ALLOC) {
				res->corruptions++;
				report(c, "ERROR: Unallocated cluster has "
					  "non-zero subcluster allocation map");
			}
			break;
		}
	}
	return 0;
}

/* Count an L1 table (held in l1, host endian) and everything below it. */
static int check_l1(struct check *c, uint64_t l1_off, const uint64_t *l1,
		    uint32_t l1_size, bool active, unsigned fix)
{
	int ret;

	if (!l1_size)
		return 0;
	inc_refs(c, l1_off, (uint64_t)l1_size * 8);
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2_off;

		if (!l1[i])
			continue;
		if (l1[i] & QCOW2_L1E_RESERVED) {
			report(c,
			       "ERROR found L1 entry with reserved bits set: "
			       "%" PRIx64,
			       l1[i]);
			c->res->corruptions++;
		}
		l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK;
		inc_refs(c, l2_off, c->cs);
		if (l2_off % c->cs) {
			report(c,
			       "ERROR l2_offset=%" PRIx64
			       ": Table is not cluster aligned; L1 entry "
			       "corrupted",
			       l2_off);
			c->res->corruptions++;
		}
		ret = check_l2(c, l2_off, active, fix);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int read_l1(struct check *c, uint64_t off, uint32_t n, uint64_t **out)
{
	uint64_t *l1;
	int ret;

	l1 = malloc((size_t)n * 8 + 1);
	if (!l1)
		return -ENOMEM;
	ret = img_io_pread(c->s->file, l1, (uint64_t)n * 8, off);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	for (uint32_t i = 0; i < n; i++)
		l1[i] = img_be64(&l1[i]);
	*out = l1;
	return 0;
}

/* ---- the snapshot table ---- */

static void copy_name(struct check *c, char *dst, size_t dst_size, uint64_t off,
		      uint32_t len)
{
	size_t n = len < dst_size - 1 ? len : dst_size - 1;

	dst[0] = 0;
	if (n && img_io_pread(c->s->file, dst, n, off) == 0)
		dst[n] = 0;
	for (size_t i = 0; dst[i]; i++)
		if (dst[i] < 0x20 || dst[i] == 0x7f)
			dst[i] = '?';
}

/* Parse the snapshot table headers (QEMU's limits), without the extra data. */
static int read_snapshots(struct check *c)
{
	struct qcow2 *s = c->s;
	uint64_t base = s->h.snapshots_offset, off = base;
	uint8_t h[SNAPSHOT_HEADER_SIZE];
	int ret;

	if (!s->h.nb_snapshots)
		return 0;
	if (s->h.nb_snapshots > MAX_SNAPSHOTS) {
		c->res->check_errors++;
		report(c, "ERROR snapshot table too large");
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %" PRIu32 " snapshots is too many",
				 s->h.nb_snapshots);
	}
	if (base % c->cs || base > (uint64_t)INT64_MAX / 2) {
		c->res->check_errors++;
		report(c, "ERROR snapshot table offset invalid");
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot table offset %#" PRIx64
				 " is invalid",
				 base);
	}
	c->snaps = calloc(s->h.nb_snapshots, sizeof(*c->snaps));
	if (!c->snaps)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
		struct snapshot *sn = &c->snaps[i];
		uint32_t extra, id_len, name_len;

		off = img_align_up(off, 8);
		ret = img_io_pread(s->file, h, sizeof(h), off);
		if (ret < 0)
			goto fail;
		off += sizeof(h);
		sn->l1_off = img_be64(h);
		sn->l1_size = img_be32(h + 8);
		id_len = img_be16(h + 12);
		name_len = img_be16(h + 14);
		extra = img_be32(h + 36);
		if (extra > MAX_SNAPSHOTS_SIZE) {
			ret = -IMG_ECORRUPT;
			goto fail;
		}
		off += extra;
		copy_name(c, sn->id, sizeof(sn->id), off, id_len);
		off += id_len;
		copy_name(c, sn->name, sizeof(sn->name), off, name_len);
		off += name_len;
		c->n_snaps = i + 1;
		if (off - base > MAX_SNAPSHOTS_SIZE) {
			ret = -IMG_ECORRUPT;
			goto fail;
		}
	}
	c->snapshots_size = off - base;
	return 0;
fail:
	c->res->check_errors++;
	report(c, "ERROR failed to read the snapshot table: %s",
	       ret == -IMG_ECORRUPT ? "Snapshot table is too big" :
				      strerror(-ret));
	return img_error(ret,
			 "qcow2: cannot read the snapshot table at %#" PRIx64,
			 base);
}

/* ---- bitmaps ---- */

static int check_bitmaps(struct check *c)
{
	struct qcow2 *s = c->s;
	uint64_t dir_size, dir_off, pos;
	uint32_t nb;
	uint8_t *dir = NULL;
	int ret = 0;

	/* QEMU ignores the bitmaps when the autoclear bit is clear, but a
	 * read-write open by this driver clears it itself: count them as long
	 * as the extension exists, so that a repair never frees them. */
	if (!s->bitmaps_ext || s->bitmaps_ext_len < 24)
		return 0;
	nb = img_be32(s->bitmaps_ext);
	dir_size = img_be64(s->bitmaps_ext + 8);
	dir_off = img_be64(s->bitmaps_ext + 16);
	if (!nb)
		return 0;
	inc_refs(c, dir_off, dir_size);
	if (dir_size > BME_MAX_DIR_BYTES || dir_off % c->cs) {
		c->res->corruptions++;
		return 0;
	}
	dir = malloc(dir_size + 1);
	if (!dir)
		return -ENOMEM;
	ret = img_io_pread(s->file, dir, dir_size, dir_off);
	if (ret < 0)
		goto out;
	pos = 0;
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t tbl_off, tbl_bytes, ent_size;
		uint32_t tbl_size, extra;
		uint16_t name_size;
		uint64_t *tbl;

		if (dir_size - pos < 24) {
			c->res->corruptions++;
			break;
		}
		tbl_off = img_be64(dir + pos);
		tbl_size = img_be32(dir + pos + 8);
		name_size = img_be16(dir + pos + 18);
		extra = img_be32(dir + pos + 20);
		ent_size = img_align_up(24 + (uint64_t)extra + name_size, 8);
		if (ent_size > dir_size - pos) {
			c->res->corruptions++;
			break;
		}
		pos += ent_size;
		tbl_bytes = (uint64_t)tbl_size * 8;
		inc_refs(c, tbl_off, tbl_bytes);
		if (tbl_bytes > BME_MAX_TABLE_BYTES || tbl_off % c->cs) {
			c->res->corruptions++;
			continue;
		}
		ret = img_metadata_check(s->img, tbl_bytes, "a bitmap table");
		if (ret < 0)
			goto out;
		tbl = malloc(tbl_bytes + 1);
		if (!tbl) {
			ret = -ENOMEM;
			goto out;
		}
		ret = img_io_pread(s->file, tbl, tbl_bytes, tbl_off);
		if (ret < 0) {
			free(tbl);
			goto out;
		}
		for (uint32_t j = 0; j < tbl_size; j++) {
			uint64_t e = img_be64(&tbl[j]);
			uint64_t off = e & BME_OFFSET_MASK;

			if ((e & BME_RESERVED) || off % c->cs ||
			    (off && (e & BME_ALL_ONES))) {
				c->res->corruptions++;
				continue;
			}
			if (off)
				inc_refs(c, off, c->cs);
		}
		free(tbl);
	}
out:
	free(dir);
	if (ret < 0) {
		report(c, "ERROR: cannot read the bitmap directory: %s",
		       strerror(-ret));
		c->res->check_errors++;
	}
	return 0;
}

/* ---- refcount computation and comparison ---- */

static void check_refblocks(struct check *c, unsigned fix, bool *rebuild)
{
	struct qcow2 *s = c->s;
	struct img_check *res = c->res;
	uint64_t size;
	int ret;

	for (uint64_t i = 0; i < s->reftable_size; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		uint64_t k = off / c->cs;

		if (s->reftable[i] & QCOW2_REFT_RESERVED) {
			report(c,
			       "ERROR refcount table entry %" PRIu64
			       " has reserved bits set",
			       i);
			res->corruptions++;
			*rebuild = true;
			continue;
		}
		if (off % c->cs) {
			report(c,
			       "ERROR refcount block %" PRIu64
			       " is not cluster aligned; refcount table "
			       "entry corrupted",
			       i);
			res->corruptions++;
			*rebuild = true;
			continue;
		}
		if (k >= c->nb) {
			res->corruptions++;
			report(c,
			       "%s refcount block %" PRIu64 " is outside image",
			       (fix & IMG_CHECK_FIX_ERRORS) ? "Repairing" :
							      "ERROR",
			       i);
			if (!(fix & IMG_CHECK_FIX_ERRORS))
				continue;
			/* Grow the file so the block lies inside it. */
			ret = -EINVAL;
			if (k < CHECK_MAX_CLUSTERS)
				ret = img_io_truncate(s->file, off + c->cs);
			if (ret == 0)
				ret = img_io_size(s->file, &size);
			if (ret == 0 && size < off + c->cs)
				ret = -EIO;
			if (ret == 0)
				c->file_size = size;
			if (ret == 0)
				ret = rc_grow(c, img_align_up(size, c->cs) /
							 c->cs);
			if (ret < 0) {
				*rebuild = true;
				report(c, "ERROR could not resize image: %s",
				       strerror(-ret));
				continue;
			}
			if (off + c->cs > s->file_end)
				s->file_end = off + c->cs;
			res->corruptions--;
			res->corruptions_fixed++;
			inc_refs(c, off, c->cs);
			continue;
		}
		if (off) {
			inc_refs(c, off, c->cs);
			if (c->rc[k] != 1) {
				report(c,
				       "ERROR refcount block %" PRIu64
				       " refcount=%" PRIu32,
				       i, c->rc[k]);
				res->corruptions++;
				*rebuild = true;
			}
		}
	}
}

/* Fill c->rc from all metadata (QEMU's calculate_refcounts). */
static int calculate_refcounts(struct check *c, unsigned fix, bool *rebuild)
{
	struct qcow2 *s = c->s;
	uint64_t file_size;
	int ret;

	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	c->file_size = file_size;
	c->data_size = file_size;
	if (c->has_data_file) {
		ret = img_io_size(s->data_file, &c->data_size);
		if (ret < 0)
			return ret;
	}
	c->nb = 0;
	if (c->rc)
		memset(c->rc, 0, c->cap * sizeof(*c->rc));
	ret = rc_grow(c, img_align_up(file_size, c->cs) / c->cs);
	if (ret < 0)
		return ret;

	inc_refs(c, 0, c->cs); /* header, extensions and backing name */
	ret = check_l1(c, s->h.l1_table_offset, s->l1, s->l1_size, true, fix);
	if (ret < 0)
		return ret;

	if (c->has_data_file && c->n_snaps) {
		report(c, "ERROR %" PRIu32 " snapshots in image with data file",
		       c->n_snaps);
		c->res->corruptions++;
	}
	for (uint32_t i = 0; i < c->n_snaps; i++) {
		struct snapshot *sn = &c->snaps[i];
		uint64_t *l1;

		if (sn->l1_off % c->cs) {
			report(c,
			       "ERROR snapshot %s (%s) l1_offset=%#" PRIx64
			       ": L1 table is not cluster aligned; snapshot "
			       "table entry corrupted",
			       sn->id, sn->name, sn->l1_off);
			c->res->corruptions++;
			continue;
		}
		if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
			report(c,
			       "ERROR snapshot %s (%s) l1_size=%#" PRIx32
			       ": L1 table is too large; snapshot table entry "
			       "corrupted",
			       sn->id, sn->name, sn->l1_size);
			c->res->corruptions++;
			continue;
		}
		ret = img_metadata_check(s->img, (uint64_t)sn->l1_size * 8,
					 "a snapshot L1 table");
		if (ret < 0)
			return ret;
		ret = read_l1(c, sn->l1_off, sn->l1_size, &l1);
		if (ret < 0) {
			report(c, "ERROR: I/O error in check_refcounts_l1");
			c->res->check_errors++;
			return ret;
		}
		ret = check_l1(c, sn->l1_off, l1, sn->l1_size, false, fix);
		free(l1);
		if (ret < 0)
			return ret;
	}
	inc_refs(c, s->h.snapshots_offset, c->snapshots_size);
	inc_refs(c, s->h.refcount_table_offset, s->reftable_size * 8);
	if (s->crypto_ext && s->crypto_ext_len >= 16)
		inc_refs(c, img_be64(s->crypto_ext),
			 img_be64(s->crypto_ext + 8));
	ret = check_bitmaps(c);
	if (ret < 0)
		return ret;
	check_refblocks(c, fix, rebuild);
	return 0;
}

/* Compare stored with expected refcounts, fixing what fix allows. */
static int compare_refcounts(struct check *c, unsigned fix, bool *rebuild,
			     uint64_t *highest)
{
	struct img_check *res = c->res;
	int ret;

	*highest = 0;
	for (uint64_t i = 0; i < c->nb; i++) {
		uint64_t stored, want = c->rc[i];
		uint64_t *fixed = NULL;

		ret = stored_refcount(c, i, &stored);
		if (ret < 0) {
			report(c,
			       "Can't get refcount for cluster %" PRIu64 ": %s",
			       i, strerror(-ret));
			res->check_errors++;
			continue;
		}
		if (stored || want)
			*highest = i;
		if (stored == want)
			continue;
		if (!stored)
			*rebuild = true;
		else if (stored > want && (fix & IMG_CHECK_FIX_LEAKS))
			fixed = &res->leaks_fixed;
		else if (stored < want && (fix & IMG_CHECK_FIX_ERRORS))
			fixed = &res->corruptions_fixed;
		report(c,
		       "%s cluster %" PRIu64 " refcount=%" PRIu64
		       " reference=%" PRIu64,
		       fixed	     ? "Repairing" :
		       stored < want ? "ERROR" :
				       "Leaked",
		       i, stored, want);
		if (fixed && set_stored_refcount(c, i, want) == 0) {
			(*fixed)++;
			continue;
		}
		if (stored < want)
			res->corruptions++;
		else
			res->leaks++;
	}
	ret = rb_flush(c);
	if (ret == 0 && (fix & (IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS)))
		ret = img_io_flush(c->s->file);
	if (ret < 0) {
		report(c, "ERROR writing refcount blocks: %s", strerror(-ret));
		res->check_errors++;
		rb_invalidate(c);
		return ret;
	}
	return 0;
}

/* ---- rebuild ---- */

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Write refcount blocks and a table for c->rc beyond the end of the file,
 * then switch the header to them (see the file comment). */
static int rebuild_refcount_structure(struct check *c)
{
	struct qcow2 *s = c->s;
	uint64_t rbe = s->refblock_entries, e = c->nb;
	uint64_t n_old = div_up(e, rbe), n_used = 0, last_used = 0;
	uint64_t r = 0, t = 0, end, max_idx, tbl_entries, next;
	uint64_t *tbl = NULL;
	uint8_t *blk = NULL, hdr[12];
	bool *used = NULL;
	int ret;

	used = calloc(n_old + 1, sizeof(*used));
	if (!used)
		return -ENOMEM;
	for (uint64_t k = 0; k < e; k++) {
		if (c->rc[k] && !used[k / rbe]) {
			used[k / rbe] = true;
			n_used++;
			last_used = k / rbe;
		}
	}
	/* Fixed point: r blocks and t table clusters placed at [e, end) must
	 * be covered by the blocks (and the table) themselves. */
	for (;;) {
		uint64_t nr = n_used, first, last, nt;

		end = e + r + t;
		max_idx = n_used ? last_used : 0;
		if (end > e) {
			first = e / rbe;
			last = (end - 1) / rbe;
			for (uint64_t j = first; j <= last; j++)
				if (j >= n_old || !used[j])
					nr++;
			if (last > max_idx)
				max_idx = last;
		}
		nt = div_up((max_idx + 1) * 8, c->cs);
		if (nr == r && nt == t)
			break;
		r = nr;
		t = nt;
	}
	if (t * c->cs > QCOW2_MAX_REFTABLE_BYTES) {
		ret = img_error(-EFBIG,
				"qcow2: rebuilt refcount table of %" PRIu64
				" clusters is too large",
				t);
		goto out;
	}
	ret = rc_grow(c, end);
	if (ret < 0)
		goto out;
	for (uint64_t k = e; k < end; k++)
		c->rc[k] = 1;

	tbl_entries = t * c->cs / 8;
	tbl = calloc(tbl_entries, sizeof(*tbl));
	blk = malloc(c->cs);
	if (!tbl || !blk) {
		ret = -ENOMEM;
		goto out;
	}
	next = e;
	for (uint64_t j = 0; j <= max_idx; j++) {
		bool need = (j < n_old && used[j]) ||
			    (j >= e / rbe && j <= (end - 1) / rbe);

		if (!need)
			continue;
		tbl[j] = next * c->cs;
		memset(blk, 0, c->cs);
		for (uint64_t k = j * rbe; k < (j + 1) * rbe && k < end; k++)
			rb_set(blk, k - j * rbe, s->h.refcount_order, c->rc[k]);
		ret = img_io_pwrite(s->file, blk, c->cs, next * c->cs);
		if (ret < 0)
			goto out;
		next++;
	}
	if (next != e + r) {
		ret = img_error(-EIO,
				"qcow2: rebuild placed %" PRIu64
				" refcount blocks, planned %" PRIu64,
				next - e, r);
		goto out;
	}
	for (uint64_t j = 0; j < tbl_entries; j++)
		img_put_be64(&tbl[j], tbl[j]);
	ret = img_io_pwrite(s->file, tbl, t * c->cs, next * c->cs);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret < 0)
		goto out;

	img_put_be64(hdr, next * c->cs);
	img_put_be32(hdr + 8, (uint32_t)t);
	ret = img_io_pwrite(s->file, hdr, sizeof(hdr), HDR_REFTABLE_OFFSET);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret < 0)
		goto out;

	for (uint64_t j = 0; j < tbl_entries; j++)
		tbl[j] = img_be64(&tbl[j]);
	for (uint64_t k = e; k < end; k++) {
		if (s->refblock_cache)
			img_cache_forget(s->refblock_cache, k * c->cs);
		if (s->l2_cache)
			img_cache_forget(s->l2_cache, k * c->cs);
	}
	if (s->refblock_cache)
		for (uint64_t j = 0; j < s->reftable_size; j++)
			if (s->reftable[j] & QCOW2_REFT_OFFSET_MASK)
				img_cache_forget(
					s->refblock_cache,
					s->reftable[j] &
						QCOW2_REFT_OFFSET_MASK);
	free(s->reftable);
	s->reftable = tbl;
	tbl = NULL;
	s->reftable_size = tbl_entries;
	s->h.refcount_table_offset = next * c->cs;
	s->h.refcount_table_clusters = (uint32_t)t;
	s->free_cluster_hint = 0;
	if (end * c->cs > s->file_end)
		s->file_end = end * c->cs;
	rb_invalidate(c);
out:
	if (ret < 0)
		report(c, "ERROR rebuilding the refcount structure: %s",
		       strerror(-ret));
	free(used);
	free(tbl);
	free(blk);
	return ret;
}

/* ---- OFLAG_COPIED ---- */

static int check_oflag_copied(struct check *c, unsigned fix)
{
	struct qcow2 *s = c->s;
	struct img_check *res = c->res;
	bool repair;
	int ret;

	if (fix & IMG_CHECK_FIX_ERRORS)
		repair = true;
	else if (fix & IMG_CHECK_FIX_LEAKS)
		repair = !res->check_errors && !res->corruptions && !res->leaks;
	else
		repair = false;

	for (uint32_t i = 0; i < s->l1_size; i++) {
		uint64_t l1e = s->l1[i];
		uint64_t l2_off = l1e & QCOW2_L1E_OFFSET_MASK;
		uint64_t rc, dirty = 0;

		if (!l2_off)
			continue;
		if (stored_refcount(c, l2_off / c->cs, &rc) < 0)
			continue;
		if ((rc == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
			res->corruptions++;
			report(c,
			       "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32
			       " l1_entry=%" PRIx64 " refcount=%" PRIu64,
			       repair ? "Repairing" : "ERROR", i, l1e, rc);
			if (repair) {
				uint8_t be[8];

				l1e = rc == 1 ? l1e | QCOW2_OFLAG_COPIED :
						l1e & ~QCOW2_OFLAG_COPIED;
				img_put_be64(be, l1e);
				ret = img_io_pwrite(s->file, be, 8,
						    s->h.l1_table_offset +
							    (uint64_t)i * 8);
				if (ret == 0)
					ret = img_io_flush(s->file);
				if (ret < 0) {
					res->check_errors++;
					return ret;
				}
				s->l1[i] = l1e;
				res->corruptions--;
				res->corruptions_fixed++;
			}
		}
		ret = img_io_pread(s->file, c->l2, c->cs, l2_off);
		if (ret < 0) {
			report(c, "ERROR: Could not read L2 table: %s",
			       strerror(-ret));
			res->check_errors++;
			return ret;
		}
		for (uint64_t j = 0; j < s->l2_entries; j++) {
			uint8_t *e = c->l2 + j * s->l2_entry_size;
			uint64_t l2e = img_be64(e);
			enum qcow2_cluster_type type = cluster_type(c, l2e);

			if (type != QCOW2_CLUSTER_NORMAL &&
			    type != QCOW2_CLUSTER_ZERO_ALLOC)
				continue;
			if (c->has_data_file)
				rc = 1;
			else if (stored_refcount(c,
						 (l2e & QCOW2_L2E_OFFSET_MASK) /
							 c->cs,
						 &rc) < 0)
				continue;
			if ((rc == 1) == !!(l2e & QCOW2_OFLAG_COPIED))
				continue;
			res->corruptions++;
			report(c,
			       "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
			       " refcount=%" PRIu64,
			       repair ? "Repairing" : "ERROR", l2e, rc);
			if (repair) {
				img_put_be64(
					e, rc == 1 ? l2e | QCOW2_OFLAG_COPIED :
						     l2e & ~QCOW2_OFLAG_COPIED);
				dirty++;
			}
		}
		if (dirty) {
			if (l2_off % c->cs) {
				report(c, "ERROR: Could not write L2 table; "
					  "metadata overlap check failed: "
					  "Input/output error");
				res->check_errors++;
				return -EIO;
			}
			ret = img_io_pwrite(s->file, c->l2, c->cs, l2_off);
			if (ret == 0)
				ret = img_io_flush(s->file);
			if (s->l2_cache)
				img_cache_forget(s->l2_cache, l2_off);
			if (ret < 0) {
				report(c, "ERROR: Could not write L2 table: %s",
				       strerror(-ret));
				res->check_errors++;
				return ret;
			}
			res->corruptions -= dirty;
			res->corruptions_fixed += dirty;
		}
	}
	return 0;
}

/* ---- the whole check ---- */

static void add_counts(struct img_check *dst, const struct img_check *src)
{
	dst->corruptions += src->corruptions;
	dst->leaks += src->leaks;
	dst->check_errors += src->check_errors;
	dst->corruptions_fixed += src->corruptions_fixed;
	dst->leaks_fixed += src->leaks_fixed;
}

static int check_init(struct check *c, struct qcow2 *s, struct img_check *res)
{
	uint64_t file_size;
	int ret;

	memset(c, 0, sizeof(*c));
	c->s = s;
	c->res = res;
	c->cs = s->cluster_size;
	c->has_data_file =
		(s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
	c->rc_max = s->refcount_max < UINT32_MAX ? (uint32_t)s->refcount_max :
						   UINT32_MAX;
	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	if (img_align_up(file_size, c->cs) / c->cs > CHECK_MAX_CLUSTERS) {
		res->check_errors++;
		return img_error(-EFBIG,
				 "qcow2: image file of %" PRIu64
				 " bytes has too many clusters to check",
				 file_size);
	}
	c->l2 = malloc(c->cs);
	c->rb = malloc(c->cs);
	if (!c->l2 || !c->rb)
		return -ENOMEM;
	return read_snapshots(c);
}

static void check_release(struct check *c)
{
	free(c->rc);
	free(c->snaps);
	free(c->l2);
	free(c->rb);
}

/*
 * QEMU's qcow2_check_refcounts: count, compare, then repair as fix allows
 * (rebuilding the refcount structures when a cluster in use has refcount 0 or
 * a refcount block is unusable, or always with force_rebuild).
 */
static int check_refcounts(struct check *c, unsigned fix, bool force_rebuild)
{
	struct img_check *res = c->res;
	struct img_check pre;
	uint64_t highest = 0;
	bool rebuild = false;
	int ret;

	res->total_clusters = div_up(c->s->h.size, c->cs);
	ret = calculate_refcounts(c, fix, &rebuild);
	if (ret < 0)
		return ret;
	pre = *res;
	ret = compare_refcounts(c, 0, &rebuild, &highest);
	if (ret < 0)
		return ret;
	if (force_rebuild)
		rebuild = true;

	if (rebuild && (fix & IMG_CHECK_FIX_ERRORS)) {
		struct img_check old = *res;
		uint64_t fresh_leaks = 0;

		report(c, "Rebuilding refcount structure");
		ret = rebuild_refcount_structure(c);
		if (ret < 0) {
			res->check_errors++;
			return ret;
		}
		res->corruptions = 0;
		res->leaks = 0;
		res->allocated_clusters = 0;
		res->fragmented_clusters = 0;
		res->compressed_clusters = 0;
		rebuild = false;
		ret = calculate_refcounts(c, 0, &rebuild);
		if (ret < 0)
			return ret;
		if (fix & IMG_CHECK_FIX_LEAKS) {
			/* The old structures are now leaked: free them. Leaks
			 * left over were made by the rebuild itself. */
			struct img_check saved = *res;

			memset(res, 0, sizeof(*res));
			res->report = saved.report;
			res->opaque = saved.opaque;
			ret = compare_refcounts(c, IMG_CHECK_FIX_LEAKS,
						&rebuild, &highest);
			if (rebuild)
				report(c, "ERROR rebuilt refcount structure is "
					  "still broken");
			fresh_leaks = res->leaks;
			*res = saved;
			if (ret < 0)
				res->check_errors++;
		}
		if (res->corruptions < old.corruptions)
			res->corruptions_fixed +=
				old.corruptions - res->corruptions;
		if (res->leaks < old.leaks)
			res->leaks_fixed += old.leaks - res->leaks;
		res->leaks += fresh_leaks;
	} else if (fix) {
		if (rebuild) {
			report(c, "ERROR need to rebuild refcount structures");
			res->check_errors++;
			return img_error(-EIO, "qcow2: the refcount structures "
					       "need a rebuild (check -r all)");
		}
		if (res->leaks || res->corruptions) {
			*res = pre;
			ret = compare_refcounts(c, fix, &rebuild, &highest);
			if (ret < 0)
				return ret;
		}
	}
	ret = check_oflag_copied(c, fix);
	if (ret < 0)
		return ret;
	res->image_end_offset = (highest + 1) * c->cs;
	return 0;
}

static int run(struct qcow2 *s, unsigned fix, bool force_rebuild,
	       struct img_check *res)
{
	struct img_check sub;
	struct check c;
	int ret;

	if (!s->read_only) {
		ret = qcow2_metadata_write_back(s);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_snapshot_check_table(s, fix, res);
	if (ret < 0)
		return ret;
	memset(&sub, 0, sizeof(sub));
	sub.report = res->report;
	sub.opaque = res->opaque;
	ret = check_init(&c, s, &sub);
	if (ret == 0) {
		ret = check_refcounts(&c, fix, force_rebuild);
		res->image_end_offset = sub.image_end_offset;
		res->total_clusters = sub.total_clusters;
		res->allocated_clusters = sub.allocated_clusters;
		res->fragmented_clusters = sub.fragmented_clusters;
		res->compressed_clusters = sub.compressed_clusters;
		res->has_stats = ret == 0;
	}
	add_counts(res, &sub);
	check_release(&c);
	if (ret < 0)
		return ret;
	if (fix && !res->check_errors && !res->corruptions) {
		uint64_t bits = s->h.incompatible_features &
				(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);

		if (bits) {
			ret = qcow2_set_incompat(s, bits, false);
			if (ret < 0)
				return ret;
			s->dirty_set = false;
			s->corrupt = false;
		}
	}
	return 0;
}

int qcow2_check(struct img *img, unsigned flags, struct img_check *res)
{
	struct qcow2 *s = img_priv(img);

	if (s->read_only)
		flags = 0;
	return run(s, flags & (IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS),
		   false, res);
}

int qcow2_rebuild_refcounts(struct qcow2 *s, struct img_check *res)
{
	struct img_check local = { 0 };

	if (s->read_only)
		return img_error(-EROFS, "qcow2: cannot rebuild the refcounts "
					 "of a read-only image");
	return run(s, IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS, true,
		   res ? res : &local);
}
