/* SPDX-License-Identifier: MIT */
/*
 * qcow2 tables: the L1 table (in memory, written entry by entry) and the
 * L2 tables behind it (through the metadata cache): looking a table up,
 * creating or copying it for a write, growing the L1 table, shrinking, and
 * setting one entry. How guest ranges map through the entries
 * is qcow2-map.c's walk; what an entry means is qcow2-l2.c's.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static int write_l1_entry(struct qcow2 *s, uint64_t i, uint64_t v)
{
	uint64_t old = s->l1[i];
	uint8_t e[8];
	int ret;

	s->l1[i] = v;
	img_put_be64(e, v);
	ret = img_io_pwrite(s->file, e, 8, s->h.l1_table_offset + i * 8);
	if (ret < 0)
		s->l1[i] = old;
	return ret;
}

int qcow2_l2_get(struct qcow2 *s, uint64_t i, bool alloc, uint8_t **t)
{
	uint64_t l1e = i < s->l1_size ? s->l1[i] : 0;
	uint64_t off = l1e & QCOW2_L1E_OFFSET_MASK, new_off;
	uint8_t *nt;
	int ret;

	*t = NULL;
	if (i >= s->l1_size)
		return img_error(-EINVAL,
				 "qcow2: L1 index %" PRIu64 " past l1_size %u",
				 i, s->l1_size);
	if (off & (s->cluster_size - 1))
		return qcow2_signal_corruption(
			s,
			"qcow2: L2 table offset %#" PRIx64
			" in L1 entry %" PRIu64 " is not cluster aligned",
			off, i);
	if (!alloc || (off && (l1e & QCOW2_OFLAG_COPIED))) {
		if (!off)
			return 0;
		if (alloc) {
			ret = qcow2_overlap_check(s, QCOW2_OL_L2, off,
						  s->cluster_size);
			if (ret < 0)
				return ret;
		}
		return img_cache_get(s->l2_cache, off, (void **)t);
	}

	ret = qcow2_alloc_clusters(s, 1, &new_off);
	if (ret < 0)
		return ret;
	ret = img_cache_get_empty(s->l2_cache, new_off, (void **)&nt);
	if (ret < 0)
		return ret;
	if (off) {
		uint8_t *old;

		ret = img_cache_get(s->l2_cache, off, (void **)&old);
		if (ret < 0)
			goto fail;
		memcpy(nt, old, s->cluster_size);
		img_cache_put(s->l2_cache, old);
	}
	ret = img_io_pwrite(s->file, nt, s->cluster_size, new_off);
	if (ret < 0)
		goto fail;
	ret = s->lazy_refcounts ? img_io_flush(s->file) :
				  qcow2_refcount_sync(s);
	if (ret < 0)
		goto fail;
	ret = write_l1_entry(s, i, new_off | QCOW2_OFLAG_COPIED);
	if (ret < 0)
		goto fail;
	if (off) {
		ret = qcow2_free_cluster_deferred(s, off);
		if (ret < 0) {
			img_cache_put(s->l2_cache, nt);
			return ret;
		}
	}
	*t = nt;
	return 0;
fail:
	img_cache_put(s->l2_cache, nt);
	img_cache_forget(s->l2_cache, new_off);
	return ret;
}

int qcow2_l2_init(struct qcow2 *s)
{
	uint64_t bytes = (uint64_t)s->h.l1_size * 8, need, n, max;
	uint8_t *raw;
	int ret;

	s->l1_size = s->h.l1_size;
	s->l1 = calloc(s->l1_size ? s->l1_size : 1, sizeof(*s->l1));
	if (!s->l1)
		return img_error(-ENOMEM, "qcow2: out of memory");
	if (bytes) {
		raw = malloc(bytes);
		if (!raw)
			return img_error(-ENOMEM, "qcow2: out of memory");
		ret = img_io_pread(s->file, raw, bytes, s->h.l1_table_offset);
		if (ret < 0) {
			free(raw);
			return ret;
		}
		for (uint64_t i = 0; i < s->l1_size; i++)
			s->l1[i] = img_be64(raw + 8 * i);
		free(raw);
	}

	/* Default: cover the whole disk up to 32 MiB of L2 tables, so that
	 * random I/O on a few GiB stays cache-resident. */
	need = ((s->h.size >> s->cluster_bits) + 1) * s->l2_entry_size;
	n = need / s->cluster_size + 1;
	max = (32ull << 20) / s->cluster_size;
	if (s->img && img_cache_size_hint(s->img))
		max = img_cache_size_hint(s->img) * 4 / 5 / s->cluster_size;
	if (n > max)
		n = max;
	if (n > 16384)
		n = 16384;
	if (n < 8)
		n = 8;
	ret = img_cache_new(s->file, s->cluster_size, (unsigned)n,
			    &s->l2_cache);
	if (ret < 0)
		return ret;
	/* Also with lazy refcounts: an allocation dirties a refcount block,
	 * so the flush this dependency brings before an L2 write-back also
	 * makes the copy-on-write data of new clusters stable before the L2
	 * entries that expose it. */
	img_cache_set_dependency(s->l2_cache, s->refblock_cache);
	return 0;
}

void qcow2_l2_release(struct qcow2 *s)
{
	img_cache_free(s->l2_cache);
	s->l2_cache = NULL;
	free(s->l1);
	s->l1 = NULL;
	free(s->plan);
	s->plan = NULL;
	s->plan_cap = 0;
}

int qcow2_l2_set_entry(struct qcow2 *s, uint64_t off, uint64_t l2e)
{
	uint64_t idx = (off >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t old;
	uint8_t *t;
	int ret;

	ret = qcow2_l2_get(s, off >> qcow2_l2_cover_bits(s), true, &t);
	if (ret < 0)
		return ret;
	old = qcow2_l2e_at(s, t, idx);
	ret = qcow2_l2_check(s, old, qcow2_bitmap_at(s, t, idx), off);
	if (ret == 0 && (old & QCOW2_OFLAG_COMPRESSED))
		ret = qcow2_compressed_free(s, old);
	else if (ret == 0 && qcow2_l2_has_host(s, old) &&
		 !qcow2_has_data_file(s))
		ret = qcow2_free_cluster_deferred(s,
						  old & QCOW2_L2E_OFFSET_MASK);
	if (ret == 0) {
		qcow2_l2e_put(s, t, idx, l2e, 0);
		img_cache_mark_dirty(s->l2_cache, t);
	}
	img_cache_put(s->l2_cache, t);
	return ret;
}

int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size)
{
	uint64_t bytes = min_size * 8, new_off, old_off = s->h.l1_table_offset;
	uint64_t old_size = s->l1_size;
	uint8_t *buf, hdr[12];
	uint64_t *l1;
	int ret;

	if (min_size <= s->l1_size)
		return 0;
	if (bytes > QCOW2_MAX_L1_BYTES)
		return img_error(-EFBIG,
				 "qcow2: L1 table of %" PRIu64
				 " entries would be too large",
				 min_size);
	l1 = realloc(s->l1, bytes);
	buf = calloc(1, img_align_up(bytes, 512));
	if (!l1 || !buf) {
		free(buf);
		if (l1)
			s->l1 = l1;
		return img_error(-ENOMEM, "qcow2: out of memory");
	}
	s->l1 = l1;
	memset(l1 + old_size, 0, (min_size - old_size) * 8);
	for (uint64_t i = 0; i < old_size; i++)
		img_put_be64(buf + 8 * i, l1[i]);
	ret = qcow2_alloc_clusters(
		s, img_align_up(bytes, s->cluster_size) >> s->cluster_bits,
		&new_off);
	if (ret < 0)
		goto out;
	ret = qcow2_refcount_sync(s);
	if (ret < 0)
		goto out;
	ret = img_io_pwrite(s->file, buf, bytes, new_off);
	if (ret < 0)
		goto out;
	ret = img_io_flush(s->file);
	if (ret < 0)
		goto out;
	img_put_be32(hdr, (uint32_t)min_size);
	img_put_be64(hdr + 4, new_off);
	ret = img_io_pwrite(s->file, hdr, sizeof(hdr), 36);
	if (ret < 0)
		goto out;
	ret = img_io_flush(s->file);
	if (ret < 0)
		goto out;
	s->l1_size = (uint32_t)min_size;
	s->h.l1_size = (uint32_t)min_size;
	s->h.l1_table_offset = new_off;
	if (old_size)
		ret = qcow2_free_clusters_now(s, old_off,
					      img_align_up(old_size * 8,
							   s->cluster_size));
out:
	free(buf);
	return ret;
}

int qcow2_shrink_clusters(struct qcow2 *s, uint64_t new_size)
{
	uint64_t first_i = new_size >> qcow2_l2_cover_bits(s);
	int ret;

	for (uint64_t i = first_i; i < s->l1_size; i++) {
		uint64_t l1e = s->l1[i], off = l1e & QCOW2_L1E_OFFSET_MASK;
		uint64_t start = i == first_i ? (new_size >> s->cluster_bits) &
							(s->l2_entries - 1) :
						0;
		bool whole = start == 0, dirty = false;
		uint8_t *t;

		if (!off)
			continue;
		ret = qcow2_l2_get(s, i, !whole, &t);
		if (ret < 0)
			return ret;
		/* A whole table is unlinked from the L1 first: what it maps
		 * is freed only once nothing on disk reaches it any more. */
		if (whole) {
			ret = write_l1_entry(s, i, 0);
			if (ret < 0) {
				img_cache_put(s->l2_cache, t);
				return ret;
			}
		}
		for (uint64_t idx = start; idx < s->l2_entries; idx++) {
			uint64_t l2e = qcow2_l2e_at(s, t, idx);

			if (!l2e && !qcow2_bitmap_at(s, t, idx))
				continue;
			/* A cluster's refcount counts each L1 table it is
			 * reached through: dropping a table that a snapshot
			 * shares drops one reference of what it maps too. */
			if (l2e & QCOW2_OFLAG_COMPRESSED) {
				ret = qcow2_l2_check(s, l2e,
						     qcow2_bitmap_at(s, t, idx),
						     ((i << s->l2_bits) +
						      idx) << s->cluster_bits);
				if (ret == 0)
					ret = qcow2_compressed_free(s, l2e);
				if (ret < 0)
					break;
			}
			if (qcow2_l2_has_host(s, l2e) &&
			    !qcow2_has_data_file(s)) {
				ret = qcow2_free_cluster_deferred(
					s, l2e & QCOW2_L2E_OFFSET_MASK);
				if (ret < 0)
					break;
			}
			if (!whole) {
				qcow2_l2e_put(s, t, idx, 0, 0);
				dirty = true;
			}
		}
		/* Also after a failure: the entries cleared so far have
		 * their frees queued, so the table must reach the disk. */
		if (dirty)
			img_cache_mark_dirty(s->l2_cache, t);
		img_cache_put(s->l2_cache, t);
		if (ret < 0)
			return ret;
		if (whole) {
			ret = qcow2_free_cluster_deferred(s, off);
			if (ret < 0)
				return ret;
		}
	}
	return qcow2_metadata_write_back(s);
}
