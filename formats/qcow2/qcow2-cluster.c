/* SPDX-License-Identifier: MIT */
/*
 * qcow2 cluster mapping: the L1 table (in memory, written entry by entry),
 * L2 tables (through the metadata cache, standard and extended entries) and
 * the guest I/O built on them. A request is mapped one L2 table at a time
 * into runs of host extents; all data transfers of a chunk go to the host in
 * one img_io_submit batch. Writes allocate every missing cluster of a chunk
 * with one contiguous allocation, copy-on-write the partial edges (whole
 * clusters, or only the touched subclusters with extended L2) and update the
 * L2 entries after the data is written.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define EXTL2_ALLOC_MASK 0xffffffffull
#define EXTL2_ALL_ZERO (0xffffffffull << 32)

static unsigned cover_bits(const struct qcow2 *s)
{
	return s->cluster_bits + s->l2_bits;
}

static uint64_t l2e_at(const struct qcow2 *s, const uint8_t *t, uint64_t i)
{
	return img_be64(t + i * s->l2_entry_size);
}

static uint64_t bitmap_at(const struct qcow2 *s, const uint8_t *t, uint64_t i)
{
	return s->extended_l2 ? img_be64(t + i * 16 + 8) : 0;
}

static void l2e_put(const struct qcow2 *s, uint8_t *t, uint64_t i, uint64_t l2e,
		    uint64_t bitmap)
{
	img_put_be64(t + i * s->l2_entry_size, l2e);
	if (s->extended_l2)
		img_put_be64(t + i * 16 + 8, bitmap);
}

static bool has_data_file(const struct qcow2 *s)
{
	return s->data_file != s->file;
}

/* Does the entry name a host cluster (possibly offset 0 in a data file)? */
static bool has_host(const struct qcow2 *s, uint64_t l2e)
{
	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return false;
	if (l2e & QCOW2_L2E_OFFSET_MASK)
		return true;
	return has_data_file(s) && (l2e & QCOW2_OFLAG_COPIED);
}

enum qcow2_cluster_type qcow2_subcluster_type(const struct qcow2 *s,
					      uint64_t l2e, uint64_t bitmap,
					      unsigned sc)
{
	bool host;

	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_CLUSTER_COMPRESSED;
	host = has_host(s, l2e);
	if (!s->extended_l2) {
		if (l2e & QCOW2_OFLAG_ZERO)
			return host ? QCOW2_CLUSTER_ZERO_ALLOC :
				      QCOW2_CLUSTER_ZERO_PLAIN;
		return host ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED;
	}
	if ((bitmap >> (32 + sc)) & 1)
		return host ? QCOW2_CLUSTER_ZERO_ALLOC :
			      QCOW2_CLUSTER_ZERO_PLAIN;
	if ((bitmap >> sc) & 1)
		return QCOW2_CLUSTER_NORMAL;
	return QCOW2_CLUSTER_UNALLOCATED;
}

static int check_l2e(struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		     uint64_t guest_off)
{
	uint64_t host = l2e & QCOW2_L2E_OFFSET_MASK;

	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return qcow2_compressed_check(s, l2e, bitmap, guest_off);
	if (host & (s->cluster_size - 1))
		return qcow2_signal_corruption(
			s,
			"qcow2: L2 entry for guest offset %#" PRIx64
			" has unaligned host offset %#" PRIx64,
			guest_off, host);
	if (s->extended_l2) {
		if (bitmap & (bitmap >> 32) & EXTL2_ALLOC_MASK)
			return qcow2_signal_corruption(
				s,
				"qcow2: invalid subcluster bitmap %#" PRIx64
				" at guest offset %#" PRIx64,
				bitmap, guest_off);
		if ((bitmap & EXTL2_ALLOC_MASK) && !has_host(s, l2e))
			return qcow2_signal_corruption(
				s,
				"qcow2: allocated subclusters without a host cluster at guest offset %#" PRIx64,
				guest_off);
	}
	return 0;
}

static int add_vec(struct qcow2 *s, uint64_t file_off, void *buf, uint64_t len,
		   bool write)
{
	struct img_io_vec *v;

	if (!len)
		return 0;
	if (s->n_vecs) {
		v = &s->vecs[s->n_vecs - 1];
		if (v->write == write && v->file_off + v->len == file_off &&
		    (uint8_t *)v->buf + v->len == (uint8_t *)buf) {
			v->len += len;
			return 0;
		}
	}
	if (s->n_vecs == s->cap_vecs) {
		unsigned cap = s->cap_vecs ? s->cap_vecs * 2 : 64;

		v = realloc(s->vecs, cap * sizeof(*v));
		if (!v)
			return img_error(-ENOMEM, "qcow2: out of memory");
		s->vecs = v;
		s->cap_vecs = cap;
	}
	v = &s->vecs[s->n_vecs++];
	v->buf = buf;
	v->len = len;
	v->file_off = file_off;
	v->write = write;
	return 0;
}

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

/*
 * Pin the L2 table of L1 index i in *t. Without alloc a missing table gives
 * *t == NULL. With alloc a missing table is created and a shared one (no
 * COPIED flag) copied; the new table is on disk, with its refcount, before
 * the L1 entry names it.
 */
static int l2_get(struct qcow2 *s, uint64_t i, bool alloc, uint8_t **t)
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
	free(s->vecs);
	s->vecs = NULL;
	s->n_vecs = s->cap_vecs = 0;
}

static bool image_has_backing(const struct qcow2 *s)
{
	return s->backing_name != NULL;
}

static int read_backing(struct qcow2 *s, void *buf, uint64_t off, uint64_t len)
{
	if (!s->img) {
		memset(buf, 0, len);
		return 0;
	}
	return img_read_backing(s->img, buf, off, len);
}

/* Map [off, off + len) inside one L2 table into vecs, zeroes and backing
 * reads. */
static int read_chunk(struct qcow2 *s, const uint8_t *t, uint8_t *p,
		      uint64_t off, uint64_t len)
{
	uint64_t pos = off, end = off + len,
		 sc_size = 1ull << s->subcluster_bits;
	uint64_t run_off = 0, run_len = 0, run_host = 0, run_l2e = 0;
	enum qcow2_cluster_type run_type = QCOW2_CLUSTER_UNALLOCATED;
	int ret;

	for (;;) {
		enum qcow2_cluster_type type = QCOW2_CLUSTER_UNALLOCATED;
		uint64_t piece_end = end, host = 0, l2e = 0;

		if (pos < end) {
			uint64_t idx = (pos >> s->cluster_bits) &
				       (s->l2_entries - 1);
			uint64_t bm = bitmap_at(s, t, idx);
			uint64_t in = pos & (s->cluster_size - 1);

			l2e = l2e_at(s, t, idx);
			ret = check_l2e(s, l2e, bm, pos);
			if (ret < 0)
				return ret;
			type = qcow2_subcluster_type(
				s, l2e, bm,
				(unsigned)(in >> s->subcluster_bits));
			piece_end = img_min(end, (pos | (sc_size - 1)) + 1);
			host = (l2e & QCOW2_L2E_OFFSET_MASK) + in;
			if (run_len && type == run_type &&
			    (type != QCOW2_CLUSTER_NORMAL ||
			     run_host + run_len == host) &&
			    (type != QCOW2_CLUSTER_COMPRESSED ||
			     run_l2e == l2e)) {
				run_len += piece_end - pos;
				pos = piece_end;
				continue;
			}
		}
		if (run_len) {
			uint8_t *dst = p + (run_off - off);

			switch (run_type) {
			case QCOW2_CLUSTER_NORMAL:
				ret = add_vec(s, run_host, dst, run_len, false);
				break;
			case QCOW2_CLUSTER_ZERO_PLAIN:
			case QCOW2_CLUSTER_ZERO_ALLOC:
				memset(dst, 0, run_len);
				ret = 0;
				break;
			case QCOW2_CLUSTER_COMPRESSED:
				ret = qcow2_compressed_read(
					s, run_l2e, run_off,
					run_off & (s->cluster_size - 1),
					run_len, dst);
				break;
			default:
				ret = read_backing(s, dst, run_off, run_len);
				break;
			}
			if (ret < 0)
				return ret;
		}
		if (pos >= end)
			return 0;
		run_type = type;
		run_off = pos;
		run_len = piece_end - pos;
		run_host = host;
		run_l2e = l2e;
		pos = piece_end;
	}
}

int qcow2_read(struct img *img, void *buf, uint64_t off, uint64_t len)
{
	struct qcow2 *s = img_priv(img);
	uint8_t *p = buf;
	const uint64_t off0 = off;
	int ret;

	if (s->crypt && ((off | len) & (IMG_CRYPT_SECTOR - 1)))
		return qcow2_crypt_unaligned(img, buf, NULL, off, len);
	s->n_vecs = 0;
	while (len) {
		uint64_t i = off >> cover_bits(s);
		uint64_t chunk = img_min(len, ((i + 1) << cover_bits(s)) - off);
		uint8_t *t;

		ret = l2_get(s, i, false, &t);
		if (ret < 0)
			return ret;
		if (!t) {
			ret = read_backing(s, p, off, chunk);
		} else {
			ret = read_chunk(s, t, p, off, chunk);
			img_cache_put(s->l2_cache, t);
		}
		if (ret < 0)
			return ret;
		p += chunk;
		off += chunk;
		len -= chunk;
	}
	if (!s->n_vecs)
		return 0;
	ret = img_data_check_vecs(img, s->data_file, buf, off0, s->vecs,
				  s->n_vecs);
	if (ret == 0)
		ret = img_io_submit(s->data_file, s->vecs, s->n_vecs);
	if (ret == 0 && s->crypt)
		ret = qcow2_crypt_read_vecs(s, buf, off0);
	return ret;
}

/* Fill dst[from, to) (offsets in the cluster at guest cstart) with the
 * cluster's current contents as described by l2e/bm. */
static int fill_old(struct qcow2 *s, uint64_t l2e, uint64_t bm, uint64_t cstart,
		    uint64_t from, uint64_t to, uint8_t *dst)
{
	uint64_t sc_size = 1ull << s->subcluster_bits;
	int ret;

	while (from < to) {
		uint64_t n = img_min(to, (from | (sc_size - 1)) + 1) - from;
		unsigned sc = (unsigned)(from >> s->subcluster_bits);

		switch (qcow2_subcluster_type(s, l2e, bm, sc)) {
		case QCOW2_CLUSTER_NORMAL:
			ret = img_data_read(s->img, s->data_file, dst + from, n,
					    (l2e & QCOW2_L2E_OFFSET_MASK) +
						    from,
					    cstart + from);
			if (ret == 0 && s->crypt)
				ret = qcow2_crypt_decrypt(
					s, dst + from, n,
					(l2e & QCOW2_L2E_OFFSET_MASK) + from,
					cstart + from);
			break;
		case QCOW2_CLUSTER_UNALLOCATED:
			ret = read_backing(s, dst + from, cstart + from, n);
			break;
		case QCOW2_CLUSTER_COMPRESSED:
			ret = qcow2_compressed_read(s, l2e, cstart, from, n,
						    dst + from);
			break;
		default:
			memset(dst + from, 0, n);
			ret = 0;
			break;
		}
		if (ret < 0)
			return ret;
		from += n;
	}
	return 0;
}

/* Does a write to this cluster need a new host cluster? */
static bool needs_alloc(const struct qcow2 *s, uint64_t l2e)
{
	if (!has_host(s, l2e))
		return true;
	return !(l2e & QCOW2_OFLAG_COPIED);
}

/*
 * Region [*fs, *fe) of the cluster to write for a guest write of
 * [woff, wend) in it: whole clusters when a cluster is (re)allocated without
 * subclusters, the touched subclusters otherwise.
 */
static void plan_cluster(const struct qcow2 *s, uint64_t l2e, uint64_t bm,
			 bool alloc, uint64_t woff, uint64_t wend, uint64_t *fs,
			 uint64_t *fe)
{
	*fs = woff;
	*fe = wend;
	if (l2e & QCOW2_OFLAG_COMPRESSED) {
		*fs = 0;
		*fe = s->cluster_size;
		return;
	}
	if (!s->extended_l2) {
		if (alloc || (l2e & QCOW2_OFLAG_ZERO)) {
			*fs = 0;
			*fe = s->cluster_size;
		}
		return;
	}
	if (alloc && has_host(s, l2e) && (bm & EXTL2_ALLOC_MASK)) {
		*fs = 0;
		*fe = s->cluster_size;
		return;
	}
	unsigned lo = (unsigned)(woff >> s->subcluster_bits);
	unsigned hi = (unsigned)((wend - 1) >> s->subcluster_bits);

	if (alloc ||
	    qcow2_subcluster_type(s, l2e, bm, lo) != QCOW2_CLUSTER_NORMAL)
		*fs = (uint64_t)lo << s->subcluster_bits;
	if (alloc ||
	    qcow2_subcluster_type(s, l2e, bm, hi) != QCOW2_CLUSTER_NORMAL)
		*fe = (uint64_t)(hi + 1) << s->subcluster_bits;
}

static uint64_t touched_mask(const struct qcow2 *s, uint64_t woff,
			     uint64_t wend)
{
	unsigned lo = (unsigned)(woff >> s->subcluster_bits);
	unsigned hi = (unsigned)((wend - 1) >> s->subcluster_bits);

	return ((hi == 31 ? 0xffffffffull : (1ull << (hi + 1)) - 1) &
		~((1ull << lo) - 1));
}

/* Write [off, off + len) that lies inside the L2 table of L1 index i. */
static int write_chunk(struct qcow2 *s, uint64_t i, const uint8_t *p,
		       uint64_t off, uint64_t len)
{
	uint64_t cs = s->cluster_size, end = off + len;
	uint64_t first = off >> s->cluster_bits;
	uint64_t n_cl = ((end - 1) >> s->cluster_bits) - first + 1;
	uint64_t n_alloc = 0, base = 0, k_alloc = 0;
	bool dirty = false;
	uint8_t *t;
	int ret;

	ret = l2_get(s, i, true, &t);
	if (ret < 0)
		return ret;
	for (uint64_t k = 0; k < n_cl; k++) {
		uint64_t idx = (first + k) & (s->l2_entries - 1);
		uint64_t l2e = l2e_at(s, t, idx);

		ret = check_l2e(s, l2e, bitmap_at(s, t, idx),
				(first + k) << s->cluster_bits);
		if (ret < 0)
			goto out;
		if (needs_alloc(s, l2e))
			n_alloc++;
	}
	if (n_alloc && !has_data_file(s)) {
		ret = qcow2_alloc_clusters(s, n_alloc, &base);
		if (ret < 0)
			goto out;
	}

	s->n_vecs = 0;
	for (uint64_t k = 0; k < n_cl; k++) {
		uint64_t idx = (first + k) & (s->l2_entries - 1);
		uint64_t l2e = l2e_at(s, t, idx), bm = bitmap_at(s, t, idx);
		uint64_t cstart = (first + k) << s->cluster_bits;
		uint64_t woff = (off > cstart ? off : cstart) - cstart;
		uint64_t wend = img_min(end, cstart + cs) - cstart;
		bool alloc = needs_alloc(s, l2e);
		uint64_t host, fs, fe;
		uint8_t *cbuf = k == 0 ? s->cow_head : s->cow_tail;

		if (!alloc)
			host = l2e & QCOW2_L2E_OFFSET_MASK;
		else if (has_data_file(s))
			host = cstart;
		else
			host = base + (k_alloc++ << s->cluster_bits);
		plan_cluster(s, l2e, bm, alloc, woff, wend, &fs, &fe);
		if (fs < woff) {
			ret = fill_old(s, l2e, bm, cstart, fs, woff, cbuf);
			if (ret < 0)
				goto out;
		}
		if (fe > wend) {
			ret = fill_old(s, l2e, bm, cstart, wend, fe, cbuf);
			if (ret < 0)
				goto out;
		}
		ret = add_vec(s, host + fs, cbuf + fs, woff - fs, true);
		if (!ret)
			ret = add_vec(s, host + woff,
				      (uint8_t *)p + (cstart + woff - off),
				      wend - woff, true);
		if (!ret)
			ret = add_vec(s, host + wend, cbuf + wend, fe - wend,
				      true);
		if (ret < 0)
			goto out;
	}
	for (unsigned v = 0; v < s->n_vecs && !has_data_file(s); v++) {
		ret = qcow2_overlap_check(s, 0, s->vecs[v].file_off,
					  s->vecs[v].len);
		if (ret < 0) {
			s->n_vecs = 0;
			goto out;
		}
	}
	if (s->crypt) {
		ret = qcow2_crypt_write_vecs(s);
		if (ret < 0) {
			s->n_vecs = 0;
			goto out;
		}
	}
	ret = img_io_submit(s->data_file, s->vecs, s->n_vecs);
	s->n_vecs = 0;
	if (ret == 0 && n_alloc && has_data_file(s))
		/* No refcount orders these: flush before L2 names them. */
		ret = img_io_flush(s->data_file);
	if (ret < 0)
		goto out;

	k_alloc = 0;
	for (uint64_t k = 0; k < n_cl; k++) {
		uint64_t idx = (first + k) & (s->l2_entries - 1);
		uint64_t l2e = l2e_at(s, t, idx), bm = bitmap_at(s, t, idx);
		uint64_t cstart = (first + k) << s->cluster_bits;
		uint64_t woff = (off > cstart ? off : cstart) - cstart;
		uint64_t wend = img_min(end, cstart + cs) - cstart;
		bool alloc = needs_alloc(s, l2e);
		uint64_t host, nl2e, nbm = 0;

		if (!alloc)
			host = l2e & QCOW2_L2E_OFFSET_MASK;
		else if (has_data_file(s))
			host = cstart;
		else
			host = base + (k_alloc++ << s->cluster_bits);
		nl2e = host | QCOW2_OFLAG_COPIED;
		if (s->extended_l2) {
			uint64_t m = touched_mask(s, woff, wend);

			nbm = (bm | m) & ~(m << 32);
			if (alloc &&
			    !(has_host(s, l2e) && (bm & EXTL2_ALLOC_MASK)))
				nbm = (bm & ~EXTL2_ALLOC_MASK & ~(m << 32)) | m;
			if (l2e & QCOW2_OFLAG_COMPRESSED)
				nbm = EXTL2_ALLOC_MASK;
		}
		if (nl2e == l2e && nbm == bm)
			continue;
		if (alloc && has_host(s, l2e) && !has_data_file(s)) {
			ret = qcow2_free_cluster_deferred(
				s, l2e & QCOW2_L2E_OFFSET_MASK);
			if (ret < 0)
				goto out;
		}
		if (l2e & QCOW2_OFLAG_COMPRESSED) {
			ret = qcow2_compressed_free(s, l2e);
			if (ret < 0)
				goto out;
		}
		l2e_put(s, t, idx, nl2e, nbm);
		dirty = true;
	}
	ret = 0;
out:
	if (dirty)
		img_cache_mark_dirty(s->l2_cache, t);
	img_cache_put(s->l2_cache, t);
	return ret;
}

int qcow2_write(struct img *img, const void *buf, uint64_t off, uint64_t len,
		unsigned flags)
{
	struct qcow2 *s = img_priv(img);
	const uint8_t *p = buf;
	int ret;

	(void)flags;
	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	if (s->crypt && ((off | len) & (IMG_CRYPT_SECTOR - 1)))
		return qcow2_crypt_unaligned(img, NULL, buf, off, len);
	ret = qcow2_bitmap_mark(s, off, len);
	if (ret < 0)
		return ret;
	while (len) {
		uint64_t i = off >> cover_bits(s);
		uint64_t chunk = img_min(len, ((i + 1) << cover_bits(s)) - off);

		ret = write_chunk(s, i, p, off, chunk);
		if (ret < 0)
			return ret;
		p += chunk;
		off += chunk;
		len -= chunk;
	}
	if (s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		return qcow2_metadata_write_back(s);
	return 0;
}

/* Add a host transfer to a map_direct list, merging with the last entry;
 * false when the list is full. */
static bool direct_vec(struct img_io_vec *v, unsigned *k, unsigned max,
		       uint64_t file_off, uint8_t *buf, uint64_t len,
		       bool write)
{
	if (*k && v[*k - 1].file_off + v[*k - 1].len == file_off &&
	    (uint8_t *)v[*k - 1].buf + v[*k - 1].len == buf) {
		v[*k - 1].len += len;
		return true;
	}
	if (*k == max)
		return false;
	v[*k] = (struct img_io_vec){ buf, len, file_off, write };
	(*k)++;
	return true;
}

/* map_direct for [off, off + len) inside one L2 table t: 1, 0 or -errno. */
static int map_direct_chunk(struct qcow2 *s, const uint8_t *t, uint8_t *p,
			    uint64_t off, uint64_t len, bool write,
			    struct img_io_vec *v, unsigned *k, unsigned max)
{
	uint64_t pos = off, end = off + len,
		 sc_size = 1ull << s->subcluster_bits;

	while (pos < end) {
		uint64_t idx = (pos >> s->cluster_bits) & (s->l2_entries - 1);
		uint64_t in = pos & (s->cluster_size - 1);
		uint64_t l2e = l2e_at(s, t, idx), bm = bitmap_at(s, t, idx);
		uint64_t piece_end = img_min(end, (pos | (sc_size - 1)) + 1);
		uint8_t *dst = p + (pos - off);
		int ret = check_l2e(s, l2e, bm, pos);

		if (ret < 0)
			return ret;
		switch (qcow2_subcluster_type(
			s, l2e, bm, (unsigned)(in >> s->subcluster_bits))) {
		case QCOW2_CLUSTER_NORMAL:
			/* A cluster shared with a snapshot (no COPIED) is
			 * copied on write: the normal path. */
			if (write && needs_alloc(s, l2e))
				return 0;
			if (!direct_vec(v, k, max,
					(l2e & QCOW2_L2E_OFFSET_MASK) + in, dst,
					piece_end - pos, write))
				return 0;
			break;
		case QCOW2_CLUSTER_ZERO_PLAIN:
		case QCOW2_CLUSTER_ZERO_ALLOC:
			if (write)
				return 0;
			memset(dst, 0, piece_end - pos);
			break;
		case QCOW2_CLUSTER_UNALLOCATED:
			if (write || image_has_backing(s))
				return 0;
			memset(dst, 0, piece_end - pos);
			break;
		default:
			return 0;
		}
		pos = piece_end;
	}
	return 1;
}

/*
 * The fast path (struct img_driver.map_direct): reads of normal, zero and
 * (without a backing file) unallocated clusters, and writes that only
 * overwrite normal subclusters of clusters this image owns (COPIED), need
 * no metadata change, so their data moves without the image lock. Whatever
 * else (allocation, copy-on-write, compressed clusters, encryption, backing
 * reads) takes the normal path; dirty bitmaps are marked here. A host
 * cluster mapped here stays valid while the transfer runs because every
 * refcount change of a cluster in use waits for running transfers first
 * (qcow2_refcount_update).
 */
int qcow2_map_direct(struct img *img, void *buf, uint64_t off, uint64_t len,
		     bool write, struct img_io **io, struct img_io_vec *vecs,
		     unsigned *n)
{
	struct qcow2 *s = img_priv(img);
	uint64_t pos = off, end = off + len;
	unsigned k = 0;
	int ret;

	if (s->crypt || s->corrupt)
		return 0;
	while (pos < end) {
		uint64_t i = pos >> cover_bits(s);
		uint64_t chunk =
			img_min(end - pos, ((i + 1) << cover_bits(s)) - pos);
		uint8_t *t;

		ret = l2_get(s, i, false, &t);
		if (ret < 0 || !t)
			return ret;
		ret = map_direct_chunk(s, t, (uint8_t *)buf + (pos - off), pos,
				       chunk, write, vecs, &k, *n);
		img_cache_put(s->l2_cache, t);
		if (ret <= 0)
			return ret;
		pos += chunk;
	}
	for (unsigned v = 0; write && v < k && !has_data_file(s); v++) {
		ret = qcow2_overlap_check(s, 0, vecs[v].file_off, vecs[v].len);
		if (ret < 0)
			return ret;
	}
	if (write) {
		ret = qcow2_bitmap_mark(s, off, len);
		if (ret < 0)
			return ret;
	}
	*io = s->data_file;
	*n = k;
	return 1;
}

int qcow2_l2_set_entry(struct qcow2 *s, uint64_t off, uint64_t l2e)
{
	uint64_t idx = (off >> s->cluster_bits) & (s->l2_entries - 1);
	uint64_t old;
	uint8_t *t;
	int ret;

	ret = l2_get(s, off >> cover_bits(s), true, &t);
	if (ret < 0)
		return ret;
	old = l2e_at(s, t, idx);
	ret = check_l2e(s, old, bitmap_at(s, t, idx), off);
	if (ret == 0 && (old & QCOW2_OFLAG_COMPRESSED))
		ret = qcow2_compressed_free(s, old);
	else if (ret == 0 && has_host(s, old) && !has_data_file(s))
		ret = qcow2_free_cluster_deferred(s,
						  old & QCOW2_L2E_OFFSET_MASK);
	if (ret == 0) {
		l2e_put(s, t, idx, l2e, 0);
		img_cache_mark_dirty(s->l2_cache, t);
	}
	img_cache_put(s->l2_cache, t);
	return ret;
}

/* Write real zeroes (through the normal write path). */
static int write_zeroes(struct qcow2 *s, uint64_t off, uint64_t len)
{
	while (len) {
		uint64_t n = img_min(len, QCOW2_ZERO_BUF_SIZE);
		int ret = qcow2_write(s->img, s->zero_buf, off, n, 0);

		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

enum zero_mode {
	ZM_ZERO, /* zero flag, keeping preallocated clusters */
	ZM_ZERO_UNMAP, /* zero flag, releasing clusters */
	ZM_DEALLOC, /* unallocated (backing shows through) */
	ZM_DISCARD, /* QEMU's discard: zero flag when it matters */
};

/* Change the entries of [off, off + len), aligned to subclusters (whole
 * clusters without extended L2). */
static int zero_entries(struct qcow2 *s, uint64_t off, uint64_t len,
			enum zero_mode mode)
{
	uint64_t end = off + len;
	bool backing = image_has_backing(s);
	bool zflag = s->h.version >= 3;

	while (off < end) {
		uint64_t i = off >> cover_bits(s);
		uint64_t cend = img_min(end, (i + 1) << cover_bits(s));
		uint64_t zpos = 0, zend = 0;
		bool dirty = false;
		uint8_t *t;
		int ret;

		if (!(s->l1[i] & QCOW2_L1E_OFFSET_MASK) &&
		    (!backing || mode == ZM_DISCARD || mode == ZM_DEALLOC)) {
			off = cend;
			continue;
		}
		ret = l2_get(s, i, true, &t);
		if (ret < 0)
			return ret;
		for (uint64_t pos = off; pos < cend;) {
			uint64_t cstart = pos & ~(s->cluster_size - 1);
			uint64_t idx = (pos >> s->cluster_bits) &
				       (s->l2_entries - 1);
			uint64_t l2e = l2e_at(s, t, idx),
				 bm = bitmap_at(s, t, idx);
			uint64_t pend = img_min(cend, cstart + s->cluster_size);
			bool whole = pos == cstart &&
				     pend == cstart + s->cluster_size;
			bool host = has_host(s, l2e);
			bool drop;
			uint64_t nl2e = l2e, nbm = bm;

			if (l2e & QCOW2_OFLAG_COMPRESSED) {
				ret = check_l2e(s, l2e, bm, cstart);
				if (ret < 0)
					goto fail;
				if (!whole) {
					/* Part of a compressed cluster: real
					 * zeroes, through a copy-on-write. */
					zpos = pos;
					zend = pend;
					break;
				}
			}
			if (s->extended_l2 && !whole) {
				uint64_t m = touched_mask(s, pos - cstart,
							  pend - cstart);

				if (mode == ZM_DEALLOC)
					nbm = bm & ~m & ~(m << 32);
				else
					nbm = (bm & ~m) | (m << 32);
				drop = false;
			} else {
				switch (mode) {
				case ZM_ZERO:
					drop = !(l2e & QCOW2_OFLAG_COPIED) ||
					       !host;
					break;
				case ZM_DISCARD:
					drop = !has_data_file(s);
					if (!has_data_file(s) && !backing &&
					    !host &&
					    !(l2e & QCOW2_OFLAG_COMPRESSED) &&
					    !(l2e & QCOW2_OFLAG_ZERO) &&
					    !(bm & EXTL2_ALL_ZERO)) {
						pos = pend;
						continue;
					}
					break;
				default:
					drop = true;
					break;
				}
				if (has_data_file(s) && mode == ZM_ZERO)
					drop = false;
				if (drop)
					nl2e = 0;
				if (mode == ZM_DEALLOC ||
				    (mode == ZM_DISCARD && !zflag)) {
					nl2e = 0;
					nbm = 0;
				} else if (s->extended_l2) {
					nbm = EXTL2_ALL_ZERO;
				} else {
					nl2e |= QCOW2_OFLAG_ZERO;
				}
				if (!drop && !host)
					nl2e &= ~QCOW2_OFLAG_COPIED;
				if (drop && host && !has_data_file(s)) {
					ret = qcow2_free_cluster_deferred(
						s, l2e & QCOW2_L2E_OFFSET_MASK);
					if (ret < 0)
						goto fail;
				}
				if (drop && (l2e & QCOW2_OFLAG_COMPRESSED)) {
					ret = qcow2_compressed_free(s, l2e);
					if (ret < 0)
						goto fail;
				}
			}
			if (nl2e != l2e || nbm != bm) {
				l2e_put(s, t, idx, nl2e, nbm);
				dirty = true;
			}
			pos = pend;
		}
		if (dirty)
			img_cache_mark_dirty(s->l2_cache, t);
		img_cache_put(s->l2_cache, t);
		if (zend) {
			ret = write_zeroes(s, zpos, zend - zpos);
			if (ret < 0)
				return ret;
			off = zend;
			continue;
		}
		off = cend;
		continue;
fail:
		if (dirty)
			img_cache_mark_dirty(s->l2_cache, t);
		img_cache_put(s->l2_cache, t);
		return ret;
	}
	if (s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		return qcow2_metadata_write_back(s);
	return 0;
}

int qcow2_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	struct qcow2 *s = img_priv(img);
	uint64_t g = 1ull << s->subcluster_bits, end = off + len, a, b;
	bool fast = flags & IMG_ZERO_FAST;
	enum zero_mode mode;
	int ret;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	ret = qcow2_bitmap_mark(s, off, len);
	if (ret < 0)
		return ret;
	if (s->data_file_raw)
		return img_io_zero(
			s->data_file, off, len,
			(flags & IMG_ZERO_MAY_UNMAP) ? IMG_IO_ZERO_PUNCH : 0);
	a = img_align_up(off, g);
	b = end == img_size(img) ? img_align_up(end, g) : end & ~(g - 1);
	if (s->h.version >= 3)
		mode = (flags & IMG_ZERO_MAY_UNMAP) ? ZM_ZERO_UNMAP : ZM_ZERO;
	else if (!image_has_backing(s) && (flags & IMG_ZERO_MAY_UNMAP))
		mode = ZM_DEALLOC;
	else
		mode = ZM_ZERO; /* v2 without a zero flag: real zeroes */
	if (a >= b) {
		if (fast)
			goto slow;
		return write_zeroes(s, off, len);
	}
	if (fast &&
	    (a != off || b < end || (s->h.version < 3 && mode != ZM_DEALLOC)))
		goto slow;
	if (a > off) {
		ret = write_zeroes(s, off, a - off);
		if (ret < 0)
			return ret;
	}
	if (s->h.version < 3 && mode != ZM_DEALLOC)
		ret = write_zeroes(s, a, b - a);
	else
		ret = zero_entries(s, a, b - a, mode);
	if (ret < 0)
		return ret;
	if (end > b)
		return write_zeroes(s, b, end - b);
	return 0;
slow:
	return img_error(-ENOTSUP,
			 "qcow2: zeroing %#" PRIx64 "+%#" PRIx64
			 " would need data writes",
			 off, len);
}

int qcow2_discard(struct img *img, uint64_t off, uint64_t len)
{
	struct qcow2 *s = img_priv(img);
	uint64_t cs = s->cluster_size, end = off + len, a, b;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	int ret = qcow2_bitmap_mark(s, off, len);

	if (ret < 0)
		return ret;
	a = img_align_up(off, cs);
	b = end & ~(cs - 1);
	if (end == img_size(img))
		b = img_align_up(end, cs);
	if (b <= a)
		return 0;
	if (s->data_file_raw) {
		/* As QEMU, the clusters become zero clusters; the raw data
		 * file must then read zeroes too. */
		ret = img_io_zero(s->data_file, a,
				  img_min(b, img_size(img)) - a,
				  IMG_IO_ZERO_PUNCH);
		if (ret < 0)
			return ret;
	}
	return zero_entries(s, a, b - a, ZM_DISCARD);
}

/*
 * QEMU's heuristic, so that map output matches: the image is treated as
 * metadata-preallocated when the clusters with a non-zero refcount number at
 * least max(10/9 of, 2 more than) the clusters the host file allocates.
 */
static int detect_metadata_prealloc(struct qcow2 *s)
{
	uint64_t file_size, allocated, real_clusters, threshold, end, count = 0;
	int ret;

	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	ret = img_io_allocated(s->file, &allocated);
	if (ret < 0)
		return ret;
	real_clusters = allocated >> s->cluster_bits;
	threshold = real_clusters * 10 / 9;
	if (threshold < real_clusters + 2)
		threshold = real_clusters + 2;
	end = img_align_up(file_size, s->cluster_size) >> s->cluster_bits;
	for (uint64_t i = 0; i < end && count < threshold; i++) {
		uint64_t rc;

		ret = qcow2_refcount_get(s, i, &rc);
		if (ret < 0)
			return ret;
		count += rc != 0;
	}
	s->metadata_prealloc = count >= threshold;
	s->metadata_prealloc_checked = true;
	return 0;
}

int qcow2_block_status(struct img *img, uint64_t off, uint64_t len,
		       struct img_extent *ext)
{
	struct qcow2 *s = img_priv(img);
	uint64_t i = off >> cover_bits(s), sc_size = 1ull << s->subcluster_bits;
	uint64_t end = img_min(off + len, (i + 1) << cover_bits(s));
	uint64_t pos = off, host0 = 0;
	enum qcow2_cluster_type type0 = QCOW2_CLUSTER_UNALLOCATED;
	bool hosted0 = false;
	uint8_t *t;
	int ret;

	ret = l2_get(s, i, false, &t);
	if (ret < 0)
		return ret;
	ext->off = off;
	ext->flags = 0;
	ext->file_off = 0;
	ext->file = NULL;
	if (!t) {
		ext->len = end - off;
		return 0;
	}
	while (pos < end) {
		uint64_t idx = (pos >> s->cluster_bits) & (s->l2_entries - 1);
		uint64_t l2e = l2e_at(s, t, idx), bm = bitmap_at(s, t, idx);
		uint64_t in = pos & (s->cluster_size - 1);
		uint64_t piece_end = img_min(end, (pos | (sc_size - 1)) + 1);
		uint64_t host = (l2e & QCOW2_L2E_OFFSET_MASK) + in;
		enum qcow2_cluster_type type;
		bool hosted;

		ret = check_l2e(s, l2e, bm, pos);
		if (ret < 0)
			goto out;
		type = qcow2_subcluster_type(
			s, l2e, bm, (unsigned)(in >> s->subcluster_bits));
		/* As QEMU: an unallocated subcluster of a cluster with a host
		 * offset reports that offset. */
		hosted =
			type == QCOW2_CLUSTER_NORMAL ||
			type == QCOW2_CLUSTER_ZERO_ALLOC ||
			(type == QCOW2_CLUSTER_UNALLOCATED && has_host(s, l2e));
		if (pos == off) {
			type0 = type;
			host0 = host;
			hosted0 = hosted;
		} else if (type != type0 || hosted != hosted0 ||
			   (hosted && host != host0 + (pos - off)) ||
			   (type == QCOW2_CLUSTER_COMPRESSED &&
			    !(pos & (s->cluster_size - 1)))) {
			break;
		}
		pos = piece_end;
	}
	ext->len = pos - off;
	switch (type0) {
	case QCOW2_CLUSTER_NORMAL: {
		bool host_data;
		uint64_t host_len;

		ext->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			     IMG_EXT_OFFSET_VALID;
		ext->file_off = host0;
		if (!s->metadata_prealloc_checked) {
			ret = detect_metadata_prealloc(s);
			if (ret < 0)
				goto out;
		}
		if (!s->metadata_prealloc)
			break;
		/* Past the end of the file is no hole but lost data: left
		 * as data, so that reading it fails (img_data_check). */
		ret = img_io_holds(s->data_file, host0 + ext->len, &host_len);
		if (ret < 0)
			goto out;
		if (!ret)
			break;
		/* A preallocated cluster over a hole in the host file reads
		 * as zeroes and is reported so (as QEMU does). */
		ret = img_io_extent(s->data_file, host0, ext->len, &host_data,
				    &host_len);
		if (ret < 0)
			goto out;
		ext->len = host_len;
		if (!host_data)
			ext->flags |= IMG_EXT_ZERO;
		break;
	}
	case QCOW2_CLUSTER_ZERO_ALLOC:
		ext->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED |
			     IMG_EXT_OFFSET_VALID;
		ext->file_off = host0;
		break;
	case QCOW2_CLUSTER_ZERO_PLAIN:
		ext->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		ext->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			     IMG_EXT_COMPRESSED;
		break;
	default:
		if (hosted0) {
			ext->flags = IMG_EXT_OFFSET_VALID;
			ext->file_off = host0;
		}
		break;
	}
	if (qcow2_crypt_hides_offsets(s))
		ext->flags &= ~IMG_EXT_OFFSET_VALID;
	if (ext->flags & IMG_EXT_OFFSET_VALID)
		ext->file = s->data_file->path ? s->data_file->path :
						 img_filename(img);
	ret = 0;
out:
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

int qcow2_preallocate(struct qcow2 *s, uint64_t off, uint64_t len,
		      enum img_prealloc mode)
{
	uint64_t end = off + len, pos = off & ~(s->cluster_size - 1);
	uint64_t data_end = 0;
	int ret;

	while (pos < end) {
		uint64_t i = pos >> cover_bits(s);
		uint64_t cend = img_min(end, (i + 1) << cover_bits(s));
		uint64_t first = pos >> s->cluster_bits;
		uint64_t n_cl = ((cend - 1) >> s->cluster_bits) - first + 1;
		uint64_t n = 0, base = 0, k_alloc = 0;
		uint8_t *t;

		ret = l2_get(s, i, true, &t);
		if (ret < 0)
			return ret;
		for (uint64_t k = 0; k < n_cl; k++)
			if (!has_host(s, l2e_at(s, t,
						(first + k) &
							(s->l2_entries - 1))))
				n++;
		if (n && !has_data_file(s)) {
			ret = qcow2_alloc_clusters(s, n, &base);
			if (ret < 0) {
				img_cache_put(s->l2_cache, t);
				return ret;
			}
		}
		for (uint64_t k = 0; k < n_cl && n; k++) {
			uint64_t idx = (first + k) & (s->l2_entries - 1);
			uint64_t l2e = l2e_at(s, t, idx);
			uint64_t host;

			if (has_host(s, l2e))
				continue;
			host = has_data_file(s) ?
				       (first + k) << s->cluster_bits :
				       base + (k_alloc++ << s->cluster_bits);
			l2e_put(s, t, idx, host | QCOW2_OFLAG_COPIED,
				bitmap_at(s, t, idx) & ~EXTL2_ALLOC_MASK);
		}
		if (n)
			img_cache_mark_dirty(s->l2_cache, t);
		img_cache_put(s->l2_cache, t);
		if (n) {
			uint64_t r_off = has_data_file(s) ?
						 first << s->cluster_bits :
						 base;
			uint64_t r_len = has_data_file(s) ?
						 n_cl << s->cluster_bits :
						 n << s->cluster_bits;

			uint64_t fsize;

			/* Reused clusters inside the file hold old data. */
			ret = img_io_size(s->data_file, &fsize);
			if (ret == 0 && r_off < fsize && !has_data_file(s))
				ret = img_io_zero(s->data_file, r_off,
						  img_min(r_len, fsize - r_off),
						  IMG_IO_ZERO_PUNCH);
			if (ret == 0 && mode == IMG_PREALLOC_FALLOC)
				ret = img_io_allocate(s->data_file, r_off,
						      r_len);
			else if (ret == 0 && mode == IMG_PREALLOC_FULL)
				ret = img_io_zero(s->data_file, r_off, r_len,
						  0);
			if (ret < 0)
				return ret;
			if (r_off + r_len > data_end)
				data_end = r_off + r_len;
		}
		pos = cend;
	}
	if (data_end) {
		uint64_t size;

		ret = img_io_size(s->data_file, &size);
		if (ret < 0)
			return ret;
		if (size < data_end) {
			ret = img_io_truncate(s->data_file, data_end);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

int qcow2_shrink_clusters(struct qcow2 *s, uint64_t new_size)
{
	uint64_t first_i = new_size >> cover_bits(s);
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
		ret = l2_get(s, i, !whole, &t);
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
			uint64_t l2e = l2e_at(s, t, idx);

			if (!l2e && !bitmap_at(s, t, idx))
				continue;
			/* A cluster's refcount counts each L1 table it is
			 * reached through: dropping a table that a snapshot
			 * shares drops one reference of what it maps too. */
			if (l2e & QCOW2_OFLAG_COMPRESSED) {
				ret = qcow2_compressed_check(
					s, l2e, bitmap_at(s, t, idx),
					((i << s->l2_bits) + idx)
						<< s->cluster_bits);
				if (ret == 0)
					ret = qcow2_compressed_free(s, l2e);
				if (ret < 0)
					break;
			}
			if (has_host(s, l2e) && !has_data_file(s)) {
				ret = qcow2_free_cluster_deferred(
					s, l2e & QCOW2_L2E_OFFSET_MASK);
				if (ret < 0)
					break;
			}
			if (!whole) {
				l2e_put(s, t, idx, 0, 0);
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
