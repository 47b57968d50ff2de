/* SPDX-License-Identifier: MIT */
/*
 * qcow2 reference counts: the refcount table (kept in memory), refcount
 * blocks (through the metadata cache, entries of 1 to 64 bits), cluster
 * allocation, deferred frees and the write-back order that keeps a crash from
 * leaving more than leaked clusters. New refcount blocks describe themselves;
 * a growing refcount table is written with its blocks past everything the old
 * table covers, flushed, and only then named by the header.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static uint64_t rb_get(const struct qcow2 *s, const uint8_t *rb, uint64_t i)
{
	switch (s->h.refcount_order) {
	case 0:
		return (rb[i >> 3] >> (i & 7)) & 1;
	case 1:
		return (rb[i >> 2] >> ((i & 3) * 2)) & 3;
	case 2:
		return (rb[i >> 1] >> ((i & 1) * 4)) & 15;
	case 3:
		return rb[i];
	case 4:
		return img_be16(rb + 2 * i);
	case 5:
		return img_be32(rb + 4 * i);
	default:
		return img_be64(rb + 8 * i);
	}
}

static void rb_set(const struct qcow2 *s, uint8_t *rb, uint64_t i, uint64_t v)
{
	unsigned shift;

	switch (s->h.refcount_order) {
	case 0:
		shift = i & 7;
		rb[i >> 3] =
			(uint8_t)((rb[i >> 3] & ~(1u << shift)) | (v << shift));
		break;
	case 1:
		shift = (i & 3) * 2;
		rb[i >> 2] =
			(uint8_t)((rb[i >> 2] & ~(3u << shift)) | (v << shift));
		break;
	case 2:
		shift = (i & 1) * 4;
		rb[i >> 1] = (uint8_t)((rb[i >> 1] & ~(15u << shift)) |
				       (v << shift));
		break;
	case 3:
		rb[i] = (uint8_t)v;
		break;
	case 4:
		img_put_be16(rb + 2 * i, (uint16_t)v);
		break;
	case 5:
		img_put_be32(rb + 4 * i, (uint32_t)v);
		break;
	default:
		img_put_be64(rb + 8 * i, v);
		break;
	}
}

int qcow2_refcount_init(struct qcow2 *s)
{
	uint64_t bytes = (uint64_t)s->h.refcount_table_clusters
			 << s->cluster_bits;
	uint8_t *raw;
	unsigned n_cache = 32;
	int ret;

	s->reftable_size = bytes / 8;
	s->reftable = malloc(bytes);
	raw = malloc(bytes);
	if (!s->reftable || !raw) {
		free(raw);
		return img_error(-ENOMEM, "qcow2: out of memory");
	}
	ret = img_io_pread(s->file, raw, bytes, s->h.refcount_table_offset);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < s->reftable_size; i++) {
		uint64_t e = img_be64(raw + 8 * i);

		if (e & (s->cluster_size - 1)) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: refcount table entry %" PRIu64
					" (%#" PRIx64
					") is not cluster aligned",
					i, e);
			goto out;
		}
		if (e > QCOW2_L2E_OFFSET_MASK || (e && e < s->cluster_size) ||
		    (e && e >= s->h.refcount_table_offset &&
		     e < s->h.refcount_table_offset + bytes) ||
		    (e && e + s->cluster_size > s->h.l1_table_offset &&
		     e < s->h.l1_table_offset + (uint64_t)s->h.l1_size * 8)) {
			ret = img_error(
				-IMG_ECORRUPT,
				"qcow2: refcount table entry %" PRIu64
				" (%#" PRIx64
				") points outside the file or into other metadata",
				i, e);
			goto out;
		}
		s->reftable[i] = e;
		if (e)
			s->reftable_used = i + 1;
	}
	if (s->img && img_cache_size_hint(s->img)) {
		uint64_t want =
			img_cache_size_hint(s->img) / 5 / s->cluster_size;

		n_cache = (unsigned)img_min(want < 4 ? 4 : want, 4096);
	}
	ret = img_cache_new(s->file, s->cluster_size, n_cache,
			    &s->refblock_cache);
	if (ret < 0)
		goto out;
	s->free_cluster_hint = 1;
	ret = 0;
out:
	free(raw);
	return ret;
}

void qcow2_refcount_release(struct qcow2 *s)
{
	img_cache_free(s->refblock_cache);
	s->refblock_cache = NULL;
	free(s->reftable);
	s->reftable = NULL;
	free(s->pending_free);
	s->pending_free = NULL;
	s->n_pending_free = s->cap_pending_free = 0;
}

static int refblock_offset(struct qcow2 *s, uint64_t ri, uint64_t *file_off)
{
	uint64_t off = ri < s->reftable_size ? s->reftable[ri] : 0;

	if (off && off < s->cluster_size)
		return qcow2_signal_corruption(s,
					       "qcow2: refcount block %" PRIu64
					       " overlaps the header",
					       ri);
	*file_off = off;
	return 0;
}

int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster_idx, uint64_t *rc)
{
	uint64_t ri = cluster_idx / s->refblock_entries, off = 0;
	void *rb;
	int ret;

	ret = refblock_offset(s, ri, &off);
	if (ret < 0)
		return ret;
	if (!off) {
		*rc = 0;
		return 0;
	}
	ret = img_cache_get(s->refblock_cache, off, &rb);
	if (ret < 0)
		return ret;
	*rc = rb_get(s, rb, cluster_idx % s->refblock_entries);
	img_cache_put(s->refblock_cache, rb);
	return 0;
}

int qcow2_refcount_update(struct qcow2 *s, uint64_t file_off, uint64_t len,
			  int64_t delta)
{
	uint64_t first, last, c;
	int ret;

	if (!len || !delta)
		return 0;
	first = file_off >> s->cluster_bits;
	last = (file_off + len - 1) >> s->cluster_bits;
	c = first;
	while (c <= last) {
		uint64_t ri = c / s->refblock_entries, off;
		uint64_t end =
			img_min(last + 1, (ri + 1) * s->refblock_entries);
		uint8_t *rb;

		ret = refblock_offset(s, ri, &off);
		if (ret < 0)
			return ret;
		if (!off)
			return qcow2_signal_corruption(
				s,
				"qcow2: no refcount block for cluster %" PRIu64,
				c);
		ret = img_cache_get(s->refblock_cache, off, (void **)&rb);
		if (ret < 0)
			return ret;
		for (; c < end; c++) {
			uint64_t i = c % s->refblock_entries;
			uint64_t rc = rb_get(s, rb, i);

			if (delta < 0 && rc < (uint64_t)-delta) {
				img_cache_put(s->refblock_cache, rb);
				return qcow2_signal_corruption(
					s,
					"qcow2: refcount of cluster %" PRIu64
					" would drop below zero",
					c);
			}
			if (delta > 0 &&
			    s->refcount_max - rc < (uint64_t)delta) {
				img_cache_put(s->refblock_cache, rb);
				return img_error(
					-ERANGE,
					"qcow2: refcount of cluster %" PRIu64
					" would exceed %" PRIu64,
					c, s->refcount_max);
			}
			/* A fast-path transfer may still use this cluster
			 * (mapped in place by the core): let it finish before the
			 * cluster can be reused or becomes shared. */
			if (rc && s->img)
				img_direct_drain(s->img);
			rc += (uint64_t)delta;
			rb_set(s, rb, i, rc);
			if (rc == 0) {
				qcow2_compressed_forget(s, c);
				if (c < s->free_cluster_hint)
					s->free_cluster_hint = c;
				if (s->l2_cache)
					img_cache_forget(s->l2_cache,
							 c << s->cluster_bits);
			}
		}
		img_cache_mark_dirty(s->refblock_cache, rb);
		img_cache_put(s->refblock_cache, rb);
	}
	return 0;
}

/* Find n free clusters in a row at or after cluster from. */
static int find_free(struct qcow2 *s, uint64_t from, uint64_t n,
		     uint64_t *start, uint64_t *first_free)
{
	uint64_t c = from ? from : 1;
	uint64_t run_start = c, run = 0;
	bool have_first = false;
	uint64_t limit = (QCOW2_L2E_OFFSET_MASK >> s->cluster_bits) + 1;

	while (run < n) {
		uint64_t ri = c / s->refblock_entries, off = 0;
		uint64_t end = (ri + 1) * s->refblock_entries;
		uint8_t *rb;
		int ret;

		if (c >= limit)
			return img_error(
				-ENOSPC,
				"qcow2: no free cluster below the 64 PB limit");
		ret = refblock_offset(s, ri, &off);
		if (ret < 0)
			return ret;
		if (!off) {
			if (!have_first) {
				*first_free = c;
				have_first = true;
			}
			if (!run)
				run_start = c;
			run += end - c;
			c = end;
			continue;
		}
		ret = img_cache_get(s->refblock_cache, off, (void **)&rb);
		if (ret < 0)
			return ret;
		for (; c < end && run < n; c++) {
			if (rb_get(s, rb, c % s->refblock_entries)) {
				run = 0;
				continue;
			}
			if (!have_first) {
				*first_free = c;
				have_first = true;
			}
			if (!run)
				run_start = c;
			run++;
		}
		img_cache_put(s->refblock_cache, rb);
	}
	*start = run_start;
	return 0;
}

static int write_reftable_entry(struct qcow2 *s, uint64_t ri)
{
	uint8_t e[8];

	img_put_be64(e, s->reftable[ri]);
	return img_io_pwrite(s->file, e, 8,
			     s->h.refcount_table_offset + ri * 8);
}

/*
 * A new refcount block for range ri at the free cluster x. The block counts
 * itself when x is in its own range; otherwise x's range must have a block.
 */
static int create_refblock(struct qcow2 *s, uint64_t ri, uint64_t x)
{
	uint64_t off = x << s->cluster_bits;
	bool self = x / s->refblock_entries == ri;
	uint8_t *rb;
	int ret;

	if (!self) {
		ret = qcow2_refcount_update(s, off, s->cluster_size, 1);
		if (ret < 0)
			return ret;
	}
	ret = img_cache_get_empty(s->refblock_cache, off, (void **)&rb);
	if (ret < 0)
		return ret;
	if (self)
		rb_set(s, rb, x % s->refblock_entries, 1);
	img_cache_mark_dirty(s->refblock_cache, rb);
	img_cache_put(s->refblock_cache, rb);
	/* The block must be on disk before the table names it. */
	ret = img_cache_write_back(s->refblock_cache);
	if (ret < 0)
		return ret;
	ret = img_io_flush(s->file);
	if (ret < 0)
		return ret;
	s->reftable[ri] = off;
	if (ri >= s->reftable_used)
		s->reftable_used = ri + 1;
	ret = write_reftable_entry(s, ri);
	if (ret < 0) {
		s->reftable[ri] = 0;
		img_cache_forget(s->refblock_cache, off);
		return ret;
	}
	return 0;
}

/*
 * Grow the refcount table so that it covers at least need_clusters. The new
 * refcount blocks and the new table go at the first cluster past everything
 * the old table describes (free by definition) and describe themselves.
 */
static int grow_reftable(struct qcow2 *s, uint64_t need_clusters)
{
	uint64_t rbe = s->refblock_entries, cs = s->cluster_size;
	uint64_t start = s->reftable_size * rbe;
	uint64_t entries, tc, nb = 0, first_rb, old_off, old_clusters;
	uint8_t *blocks = NULL, *table = NULL, hdr[12];
	uint64_t *mem;
	int ret;

	entries = s->reftable_size + s->reftable_size / 2;
	if (entries < need_clusters / rbe + 1)
		entries = need_clusters / rbe + 1;
	for (;;) {
		uint64_t nb2, end;

		tc = (entries * 8 + cs - 1) / cs;
		for (;;) {
			first_rb = start / rbe;
			nb2 = (start + nb + tc - 1) / rbe - first_rb + 1;
			if (nb2 == nb)
				break;
			nb = nb2;
		}
		end = start + nb + tc;
		if (end / rbe + 1 <= entries &&
		    need_clusters / rbe + 1 <= entries)
			break;
		entries = img_align_up(end, rbe) / rbe + 1;
		if (entries < need_clusters / rbe + 1)
			entries = need_clusters / rbe + 1;
	}
	if (tc * cs > QCOW2_MAX_REFTABLE_BYTES)
		return img_error(-ENOSPC,
				 "qcow2: refcount table would need %" PRIu64
				 " clusters, more than the limit",
				 tc);
	entries = tc * cs / 8;

	blocks = calloc(nb, cs);
	table = calloc(tc, cs);
	mem = malloc(entries * 8);
	if (!blocks || !table || !mem) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto fail;
	}
	for (uint64_t c = start; c < start + nb + tc; c++) {
		uint64_t b = c / rbe - first_rb;

		rb_set(s, blocks + b * cs, c % rbe, 1);
	}
	memcpy(mem, s->reftable, s->reftable_size * 8);
	memset(mem + s->reftable_size, 0, (entries - s->reftable_size) * 8);
	for (uint64_t b = 0; b < nb; b++)
		mem[first_rb + b] = (start + b) * cs;
	for (uint64_t i = 0; i < entries; i++)
		img_put_be64(table + 8 * i, mem[i]);

	ret = img_io_pwrite(s->file, blocks, nb * cs, start * cs);
	if (ret < 0)
		goto fail;
	ret = img_io_pwrite(s->file, table, tc * cs, (start + nb) * cs);
	if (ret < 0)
		goto fail;
	ret = img_cache_write_back(s->refblock_cache);
	if (ret < 0)
		goto fail;
	ret = img_io_flush(s->file);
	if (ret < 0)
		goto fail;
	img_put_be64(hdr, (start + nb) * cs);
	img_put_be32(hdr + 8, (uint32_t)tc);
	ret = img_io_pwrite(s->file, hdr, sizeof(hdr), 48);
	if (ret < 0)
		goto fail;
	ret = img_io_flush(s->file);
	if (ret < 0)
		goto fail;

	old_off = s->h.refcount_table_offset;
	old_clusters = s->h.refcount_table_clusters;
	free(s->reftable);
	s->reftable = mem;
	s->reftable_size = entries;
	s->reftable_used = first_rb + nb;
	s->h.refcount_table_offset = (start + nb) * cs;
	s->h.refcount_table_clusters = (uint32_t)tc;
	free(blocks);
	free(table);
	/* The header no longer names the old table. */
	return qcow2_refcount_update(s, old_off, old_clusters * cs, -1);
fail:
	free(blocks);
	free(table);
	free(mem);
	return ret;
}

static int mark_dirty_for_lazy(struct qcow2 *s)
{
	int ret;

	if (!s->lazy_refcounts || s->dirty_set)
		return 0;
	ret = qcow2_set_incompat(s, QCOW2_INCOMPAT_DIRTY, true);
	if (ret < 0)
		return ret;
	s->dirty_set = true;
	return 0;
}

int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *file_off)
{
	uint64_t c = 0, first_free = 0, end;
	int ret;

	if (!n)
		return img_error(-EINVAL, "qcow2: allocation of 0 clusters");
	ret = mark_dirty_for_lazy(s);
	if (ret < 0)
		return ret;
	for (;;) {
		bool again = false;

		ret = find_free(s, s->free_cluster_hint, n, &c, &first_free);
		if (ret < 0)
			return ret;
		end = c + n;
		for (uint64_t ri = c / s->refblock_entries;
		     ri <= (end - 1) / s->refblock_entries; ri++) {
			uint64_t x, unused, rx;

			if (ri >= s->reftable_size) {
				ret = grow_reftable(s, end);
				if (ret < 0)
					return ret;
				again = true;
				break;
			}
			if (s->reftable[ri])
				continue;
			/* Put the block past the run so the run stays free. */
			ret = find_free(s, end, 1, &x, &unused);
			if (ret < 0)
				return ret;
			rx = x / s->refblock_entries;
			if (rx >= s->reftable_size)
				ret = grow_reftable(s, x + 1);
			else if (rx != ri && !s->reftable[rx])
				ret = create_refblock(s, rx, x);
			else
				ret = create_refblock(s, ri, x);
			if (ret < 0)
				return ret;
			again = true;
			break;
		}
		if (!again)
			break;
	}
	ret = qcow2_refcount_update(s, c << s->cluster_bits,
				    n << s->cluster_bits, 1);
	if (ret < 0)
		return ret;
	ret = qcow2_overlap_check(s, 0, c << s->cluster_bits,
				  n << s->cluster_bits);
	if (ret < 0)
		return ret;
	s->free_cluster_hint = first_free == c ? end : first_free;
	if ((end << s->cluster_bits) > s->file_end)
		s->file_end = end << s->cluster_bits;
	*file_off = c << s->cluster_bits;
	return 0;
}

int qcow2_free_cluster_deferred(struct qcow2 *s, uint64_t file_off)
{
	if (s->n_pending_free == s->cap_pending_free) {
		uint64_t cap = s->cap_pending_free ? s->cap_pending_free * 2 :
						     256;
		uint64_t *p = realloc(s->pending_free, cap * sizeof(*p));

		if (!p)
			return img_error(-ENOMEM, "qcow2: out of memory");
		s->pending_free = p;
		s->cap_pending_free = cap;
	}
	s->pending_free[s->n_pending_free++] = file_off;
	return 0;
}

int qcow2_free_clusters_now(struct qcow2 *s, uint64_t file_off, uint64_t len)
{
	return qcow2_refcount_update(s, file_off, len, -1);
}

int qcow2_refcount_sync(struct qcow2 *s)
{
	int ret;

	if (s->lazy_refcounts)
		return 0;
	ret = img_cache_write_back(s->refblock_cache);
	if (ret < 0)
		return ret;
	return img_io_flush(s->file);
}

/* IMG_OPEN_UNMAP: give clusters whose last reference went back to the host,
 * adjacent ones in one call. Nothing on disk maps them any more (the tables
 * that did are flushed); should the refcount drops not reach the disk, they
 * are leaks holding no data. */
struct punch_run {
	uint64_t off, len;
};

static int punch_flush(struct qcow2 *s, struct punch_run *r)
{
	int ret = 0;

	if (r->len)
		ret = img_io_zero(s->file, r->off, r->len, IMG_IO_ZERO_PUNCH);
	r->len = 0;
	return ret;
}

static int punch_if_free(struct qcow2 *s, struct punch_run *r,
			 uint64_t file_off)
{
	uint64_t rc;
	int ret = qcow2_refcount_get(s, file_off >> s->cluster_bits, &rc);

	if (ret < 0 || rc)
		return ret;
	if (r->len && r->off + r->len == file_off) {
		r->len += s->cluster_size;
		return 0;
	}
	ret = punch_flush(s, r);
	r->off = file_off;
	r->len = s->cluster_size;
	return ret;
}

int qcow2_metadata_write_back(struct qcow2 *s)
{
	int ret;

	if (s->read_only)
		return 0;
	ret = img_cache_write_back(s->l2_cache);
	if (ret < 0)
		return ret;
	if (s->n_pending_free) {
		struct punch_run run = { 0, 0 };

		/* The L2/L1 entries that dropped these clusters are written;
		 * make them stable before the refcounts drop. */
		ret = img_io_flush(s->file);
		if (ret < 0)
			return ret;
		for (uint64_t i = 0; i < s->n_pending_free; i++) {
			ret = qcow2_refcount_update(s, s->pending_free[i],
						    s->cluster_size, -1);
			if (ret == 0 && s->unmap)
				ret = punch_if_free(s, &run,
						    s->pending_free[i]);
			if (ret < 0) {
				s->n_pending_free = 0;
				return ret;
			}
		}
		s->n_pending_free = 0;
		ret = punch_flush(s, &run);
		if (ret < 0)
			return ret;
	}
	return img_cache_write_back(s->refblock_cache);
}

int qcow2_refcount_end(struct qcow2 *s, uint64_t *cluster_end)
{
	for (uint64_t ri = s->reftable_size; ri-- > 0;) {
		uint64_t off = 0;
		uint8_t *rb;
		int ret;

		ret = refblock_offset(s, ri, &off);
		if (ret < 0)
			return ret;
		if (!off)
			continue;
		ret = img_cache_get(s->refblock_cache, off, (void **)&rb);
		if (ret < 0)
			return ret;
		for (uint64_t i = s->refblock_entries; i-- > 0;) {
			if (rb_get(s, rb, i)) {
				img_cache_put(s->refblock_cache, rb);
				*cluster_end = ri * s->refblock_entries + i + 1;
				return 0;
			}
		}
		img_cache_put(s->refblock_cache, rb);
	}
	*cluster_end = 0;
	return 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int qcow2_overlap_check(struct qcow2 *s, unsigned ignore, uint64_t file_off,
			uint64_t len)
{
	uint64_t cs = s->cluster_size;
	const char *what = NULL;

	if (overlaps(file_off, len, 0, cs))
		what = "the header";
	else if (overlaps(file_off, len, s->h.l1_table_offset,
			  (uint64_t)s->l1_size * 8))
		what = "the L1 table";
	else if (overlaps(file_off, len, s->h.refcount_table_offset,
			  (uint64_t)s->h.refcount_table_clusters * cs))
		what = "the refcount table";
	else if (s->h.nb_snapshots &&
		 overlaps(file_off, len, s->h.snapshots_offset, cs))
		what = "the snapshot table";
	if (!what && !(ignore & QCOW2_OL_REFBLOCK)) {
		for (uint64_t i = 0; i < s->reftable_used; i++) {
			if (overlaps(file_off, len, s->reftable[i], cs)) {
				what = "a refcount block";
				break;
			}
		}
	}
	if (!what && !(ignore & QCOW2_OL_L2) && s->l1) {
		for (uint64_t i = 0; i < s->l1_size; i++) {
			uint64_t l2 = s->l1[i] & QCOW2_L1E_OFFSET_MASK;

			if (l2 && overlaps(file_off, len, l2, cs)) {
				what = "an L2 table";
				break;
			}
		}
	}
	if (!what)
		return 0;
	return qcow2_signal_corruption(s,
				       "qcow2: write of %" PRIu64
				       " bytes at %#" PRIx64
				       " would overwrite %s",
				       len, file_off, what);
}
