/* SPDX-License-Identifier: MIT */
/*
 * The one walk over qcow2 L2 tables (qcow2_walk) and everything that maps
 * guest ranges through it: .map for reads, block status and writes, the
 * commit of planned writes, zero and discard, and preallocation. The walk
 * looks each L2 table up once, validates each entry once (qcow2-l2.c) and
 * hands out runs of one kind. The core moves all guest data (lib/request.c).
 * A write map walks a table once: a run of owned clusters is overwritten in
 * place; otherwise it plans the clusters (what must be allocated, and where
 * copy-on-write fills partial edges: whole clusters, or only the touched
 * subclusters with extended L2), allocates the missing ones in one
 * contiguous allocation, and the core writes the data before qcow2_commit
 * changes the L2 entries, so that the crash-safe order of qcow2.c (refcount
 * before L2 before L1, through the cache dependency) holds.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* One cluster of a write, as the planning walk found it. */
struct qcow2_write_plan {
	uint64_t idx, cstart; /* entry index in its table, guest offset */
	uint64_t woff, wend; /* the bytes written, relative to cstart */
	uint64_t l2e, bitmap;
	uint64_t host; /* the host cluster the data goes to */
	bool alloc; /* a new host cluster is needed */
};

int qcow2_l2_check(struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		   uint64_t guest_off)
{
	if (qcow2_l2_validate(s, l2e, bitmap, guest_off, false) < 0)
		return qcow2_signal_corruption(s, "%s", img_last_error());
	return 0;
}

/* Runs of [off, end), all inside the pinned table t. */
static int walk_table(struct qcow2 *s, uint8_t *t, uint64_t off, uint64_t end,
		      const struct qcow2_walker *w, void *opaque)
{
	uint64_t cs = s->cluster_size,
		 sc_mask = (1ull << s->subcluster_bits) - 1;
	bool per_cluster = w->flags & QCOW2_WALK_CLUSTERS;
	struct qcow2_run r = { .len = 0 };
	struct qcow2_l2_entry e = { .l2e = 0 };
	uint64_t pos = off, idx = UINT64_MAX;
	int ret;

	while (pos < end) {
		uint64_t in = pos & (cs - 1);
		uint64_t i = (pos >> s->cluster_bits) & (s->l2_entries - 1);
		uint64_t piece_end, host;
		enum qcow2_cluster_type type;

		if (i != idx) {
			idx = i;
			ret = qcow2_l2_decode(s, qcow2_l2e_at(s, t, i),
					      qcow2_bitmap_at(s, t, i), pos,
					      &e);
			if (ret < 0)
				return qcow2_signal_corruption(
					s, "%s", img_last_error());
		}
		type = qcow2_l2_type_at(s, &e, in);
		piece_end = img_min(end, per_cluster ? pos - in + cs :
						       (pos | sc_mask) + 1);
		host = e.has_host ? e.host + in : 0;
		/* As QEMU: an unallocated subcluster of a cluster with a host
		 * offset reports that offset, so it is "hosted" too. */
		if (r.len && !per_cluster && type == r.type &&
		    e.has_host == r.hosted &&
		    (!e.has_host || r.host + r.len == host) &&
		    (type != QCOW2_CLUSTER_COMPRESSED || in)) {
			r.len += piece_end - pos;
			pos = piece_end;
			continue;
		}
		if (r.len) {
			ret = w->run(s, &r, opaque);
			if (ret)
				return ret;
		}
		r = (struct qcow2_run){ .off = pos,
					.len = piece_end - pos,
					.type = type,
					.hosted = e.has_host,
					.host = host,
					.e = e,
					.table = t,
					.idx = i };
		pos = piece_end;
	}
	return r.len ? w->run(s, &r, opaque) : 0;
}

int qcow2_walk(struct qcow2 *s, uint64_t off, uint64_t len,
	       const struct qcow2_walker *w, void *opaque)
{
	unsigned cover = qcow2_l2_cover_bits(s);
	uint64_t end = off + len;

	while (off < end) {
		uint64_t i = off >> cover;
		uint64_t tend = img_min(end, (i + 1) << cover);
		uint8_t *t;
		int ret;

		if ((w->flags & QCOW2_WALK_SKIP_HOLES) &&
		    (i >= s->l1_size || !(s->l1[i] & QCOW2_L1E_OFFSET_MASK))) {
			off = tend;
			continue;
		}
		ret = qcow2_l2_get(s, i, w->flags & QCOW2_WALK_ALLOC, &t);
		if (ret < 0)
			return ret;
		if (!t) {
			struct qcow2_run r = {
				.off = off,
				.len = tend - off,
				.type = QCOW2_CLUSTER_UNALLOCATED,
			};

			ret = w->run(s, &r, opaque);
		} else {
			ret = walk_table(s, t, off, tend, w, opaque);
			if (ret == 0 && w->table_end)
				ret = w->table_end(s, t, opaque);
			img_cache_put(s->l2_cache, t);
		}
		if (ret)
			return ret;
		off = tend;
	}
	return 0;
}

/* Double the capacity of a scratch array of *cap elements. */
static int grow(void **array, unsigned *cap, size_t elem_size)
{
	unsigned n = *cap ? *cap * 2 : 64;
	void *p = realloc(*array, n * elem_size);

	if (!p)
		return img_error(-ENOMEM, "qcow2: out of memory");
	*array = p;
	*cap = n;
	return 0;
}

static bool image_has_backing(const struct qcow2 *s)
{
	return s->backing_name != NULL;
}

/* ---- .map and block status ---- */

static int first_run(struct qcow2 *s, const struct qcow2_run *r, void *opaque)
{
	(void)s;
	*(struct qcow2_run *)opaque = *r;
	return 1;
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

/* A data extent of a metadata-preallocated image over a hole in the host
 * file reads as zeroes and is reported so (as QEMU does): cut m there. */
static int host_holes(struct qcow2 *s, struct img_map *m)
{
	uint64_t host_len;
	bool host_data;
	int ret;

	if (!s->metadata_prealloc_checked) {
		ret = detect_metadata_prealloc(s);
		if (ret < 0)
			return ret;
	}
	if (!s->metadata_prealloc)
		return 0;
	/* Past the end of the file is no hole but lost data: left as data,
	 * so that reading it fails (img_data_check). */
	ret = img_io_holds(s->data_file, m->file_off + m->len, &host_len);
	if (ret <= 0)
		return ret;
	ret = img_io_extent(s->data_file, m->file_off, m->len, &host_data,
			    &host_len);
	if (ret < 0)
		return ret;
	m->len = host_len;
	if (!host_data)
		m->flags |= IMG_EXT_ZERO;
	return 0;
}

static int qcow2_map_write(struct qcow2 *s, uint64_t off, uint64_t len,
			   struct img_map *m);

int qcow2_map(struct img *img, uint64_t off, uint64_t len, struct img_map *m)
{
	static const struct qcow2_walker first = { .run = first_run };
	struct qcow2 *s = img_priv(img);
	/* Host offsets of an encrypted image are ciphertext: only its data
	 * extents carry one (for the core to decrypt), as QEMU hides them. */
	bool show_host = !s->crypt;
	struct qcow2_run r;
	int ret;

	if (m->write)
		return qcow2_map_write(s, off, len, m);
	ret = qcow2_walk(s, off, len, &first, &r);
	if (ret < 0)
		return ret;
	*m = (struct img_map){ .len = r.len };
	if (qcow2_has_data_file(s))
		m->io = s->data_file;
	switch (r.type) {
	case QCOW2_CLUSTER_NORMAL:
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->file_off = r.host;
		if (s->crypt) {
			m->flags |= IMG_EXT_ENCRYPTED;
			m->cipher = qcow2_crypt_cipher(s);
		}
		return host_holes(s, m);
	case QCOW2_CLUSTER_ZERO_ALLOC:
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
		break;
	case QCOW2_CLUSTER_ZERO_PLAIN:
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
		return 0;
	case QCOW2_CLUSTER_COMPRESSED:
		m->flags = IMG_EXT_COMPRESSED | IMG_EXT_DATA |
			   IMG_EXT_ALLOCATED;
		m->codec = qcow2_compress_codec(s);
		m->file_off = r.e.host;
		m->clen = r.e.clen;
		m->cluster_size = s->cluster_size;
		m->in_cluster = off & (s->cluster_size - 1);
		return 0;
	default:
		m->flags = 0;
		break;
	}
	if (r.hosted && show_host) {
		m->flags |= IMG_EXT_OFFSET_VALID;
		m->file_off = r.host;
	}
	return 0;
}

int qcow2_block_status(struct img *img, uint64_t off, uint64_t len,
		       struct img_extent *ext)
{
	struct qcow2 *s = img_priv(img);
	struct img_map m;
	int ret;

	ret = qcow2_map(img, off, len, &m);
	if (ret < 0)
		return ret;
	ext->off = off;
	ext->len = m.len;
	ext->flags = m.flags & ~IMG_EXT_ENCRYPTED;
	if (m.flags & IMG_EXT_ENCRYPTED)
		ext->flags &= ~IMG_EXT_OFFSET_VALID;
	ext->file_off = 0;
	ext->file = NULL;
	if (ext->flags & IMG_EXT_OFFSET_VALID) {
		ext->file_off = m.file_off;
		ext->file = s->data_file->path ? s->data_file->path :
						 img_filename(img);
	}
	return 0;
}

/* ---- writes: qcow2 maps and plans them, the core moves the data ---- */

/* Does a write to this cluster need a new host cluster? */
static bool needs_alloc(const struct qcow2 *s, uint64_t l2e)
{
	return !qcow2_l2_has_host(s, l2e) || !(l2e & QCOW2_OFLAG_COPIED);
}

/* A planned write (struct img_map.plan): the clusters of one L2 table it
 * writes, in guest order, and the host clusters it allocated for them. */
struct img_plan {
	uint64_t l1_idx;
	uint64_t base, n_alloc; /* the contiguous new host clusters */
	bool flush_data; /* new clusters in the data file, which no
			  * refcount orders before the L2 entries */
	unsigned n;
	struct qcow2_write_plan c[];
};

/*
 * Region [*fs, *fe) of the planned cluster to write: whole clusters when a
 * cluster is (re)allocated without subclusters, the touched subclusters
 * otherwise.
 */
static void plan_region(const struct qcow2 *s, const struct qcow2_write_plan *p,
			uint64_t *fs, uint64_t *fe)
{
	uint64_t l2e = p->l2e, bm = p->bitmap;

	*fs = p->woff;
	*fe = p->wend;
	if (l2e & QCOW2_OFLAG_COMPRESSED) {
		*fs = 0;
		*fe = s->cluster_size;
		return;
	}
	if (!s->extended_l2) {
		if (p->alloc || (l2e & QCOW2_OFLAG_ZERO)) {
			*fs = 0;
			*fe = s->cluster_size;
		}
		return;
	}
	if (p->alloc && qcow2_l2_has_host(s, l2e) &&
	    (bm & QCOW2_EXTL2_ALLOC_MASK)) {
		*fs = 0;
		*fe = s->cluster_size;
		return;
	}
	unsigned lo = (unsigned)(p->woff >> s->subcluster_bits);
	unsigned hi = (unsigned)((p->wend - 1) >> s->subcluster_bits);

	if (p->alloc ||
	    qcow2_subcluster_type(s, l2e, bm, lo) != QCOW2_CLUSTER_NORMAL)
		*fs = (uint64_t)lo << s->subcluster_bits;
	if (p->alloc ||
	    qcow2_subcluster_type(s, l2e, bm, hi) != QCOW2_CLUSTER_NORMAL)
		*fe = (uint64_t)(hi + 1) << s->subcluster_bits;
}

/* The entry and bitmap of a planned cluster once its data is written. */
static void plan_entry(const struct qcow2 *s, const struct qcow2_write_plan *p,
		       uint64_t *nl2e, uint64_t *nbm)
{
	uint64_t l2e = p->l2e, bm = p->bitmap;

	*nl2e = p->host | QCOW2_OFLAG_COPIED;
	*nbm = 0;
	if (!s->extended_l2)
		return;
	uint64_t m = qcow2_l2_subcluster_mask(s, p->woff, p->wend);

	*nbm = (bm | m) & ~(m << 32);
	if (p->alloc &&
	    !(qcow2_l2_has_host(s, l2e) && (bm & QCOW2_EXTL2_ALLOC_MASK)))
		*nbm = (bm & ~QCOW2_EXTL2_ALLOC_MASK & ~(m << 32)) | m;
	if (l2e & QCOW2_OFLAG_COMPRESSED)
		*nbm = QCOW2_EXTL2_ALLOC_MASK;
}

/* What the write map found: a run of clusters it overwrites in place, or
 * a run it plans (new clusters, contiguous, whole except at its ends; or
 * one cluster whose entry changes in place). */
enum wmap_kind { WMAP_NONE, WMAP_IN_PLACE, WMAP_PLAN };

struct wmap_ctx {
	bool peek; /* IMG_MAP_WRITE_IN_PLACE: plan nothing */
	enum wmap_kind kind;
	uint64_t len; /* guest bytes of the request the run covers */
	uint64_t host_end; /* in place: past the run's last host byte */
	unsigned n; /* planned clusters, in s->plan */
	uint64_t n_alloc;
};

static int wmap_run(struct qcow2 *s, const struct qcow2_run *r, void *opaque)
{
	struct wmap_ctx *c = opaque;
	uint64_t cstart = r->off & ~(s->cluster_size - 1);
	struct qcow2_write_plan p = {
		.idx = r->idx,
		.cstart = cstart,
		.woff = r->off - cstart,
		.wend = r->off - cstart + r->len,
		.l2e = r->e.l2e,
		.bitmap = r->e.bitmap,
		.alloc = needs_alloc(s, r->e.l2e),
	};
	uint64_t fs, fe, nl2e, nbm;
	bool in_place = false;

	plan_region(s, &p, &fs, &fe);
	if (!p.alloc && fs == p.woff && fe == p.wend) {
		p.host = p.l2e & QCOW2_L2E_OFFSET_MASK;
		plan_entry(s, &p, &nl2e, &nbm);
		in_place = nl2e == p.l2e && nbm == p.bitmap;
	}
	if (c->kind == WMAP_NONE) {
		c->kind = in_place ? WMAP_IN_PLACE : WMAP_PLAN;
		if (in_place)
			c->host_end = p.host + p.woff;
	} else if (c->kind == WMAP_IN_PLACE) {
		if (!in_place || c->host_end != p.host + p.woff)
			return 1;
	} else {
		const struct qcow2_write_plan *prev = &s->plan[c->n - 1];
		uint64_t pfs, pfe;

		/* Only new clusters join a plan, and only where the
		 * region stays one guest and host range. */
		plan_region(s, prev, &pfs, &pfe);
		if (in_place || !p.alloc || !prev->alloc || fs ||
		    pfe != s->cluster_size || c->peek)
			return 1;
	}
	c->len += r->len;
	if (c->kind == WMAP_IN_PLACE) {
		c->host_end += r->len;
		return 0;
	}
	if (c->peek)
		return 1;
	if (c->n == s->plan_cap &&
	    grow((void **)&s->plan, &s->plan_cap, sizeof(p)) < 0)
		return -ENOMEM;
	s->plan[c->n++] = p;
	c->n_alloc += p.alloc;
	return 0;
}

/* The planned clusters get their host clusters, and the plan its copy. */
static int plan_make(struct qcow2 *s, const struct wmap_ctx *c, uint64_t l1_idx,
		     struct img_plan **out)
{
	struct img_plan *plan;
	uint64_t base = 0, k_alloc = 0;
	int ret;

	plan = malloc(sizeof(*plan) + c->n * sizeof(plan->c[0]));
	if (!plan)
		return img_error(-ENOMEM, "qcow2: out of memory");
	if (c->n_alloc && !qcow2_has_data_file(s)) {
		ret = qcow2_alloc_clusters(s, c->n_alloc, &base);
		if (ret < 0) {
			free(plan);
			return ret;
		}
	}
	plan->l1_idx = l1_idx;
	plan->base = base;
	plan->n_alloc = qcow2_has_data_file(s) ? 0 : c->n_alloc;
	plan->flush_data = qcow2_has_data_file(s) && c->n_alloc;
	plan->n = c->n;
	for (unsigned k = 0; k < c->n; k++) {
		struct qcow2_write_plan *p = &plan->c[k];

		*p = s->plan[k];
		if (!p->alloc)
			p->host = p->l2e & QCOW2_L2E_OFFSET_MASK;
		else if (qcow2_has_data_file(s))
			p->host = p->cstart;
		else
			p->host = base + (k_alloc++ << s->cluster_bits);
	}
	*out = plan;
	return 0;
}

/* Fill a write map from the run the walk found. */
static int wmap_fill(struct qcow2 *s, const struct wmap_ctx *c, uint64_t off,
		     uint64_t l1_idx, struct img_map *m)
{
	const unsigned sector = IMG_CRYPT_SECTOR;
	uint64_t region_host;
	int ret;

	m->len = c->len;
	m->io = s->data_file;
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	if (c->kind == WMAP_IN_PLACE) {
		m->file_off = c->host_end - c->len;
		/* Whole cipher sectors: the core fills in the rest. */
		if (s->crypt && ((off | c->len) & (sector - 1))) {
			if (c->peek) {
				m->flags = 0;
				return 0;
			}
			m->region_off = off & ~(uint64_t)(sector - 1);
			m->region_len = img_align_up(off + c->len, sector) -
					m->region_off;
		}
	} else if (c->peek) {
		m->flags = 0;
		return 0;
	} else {
		const struct qcow2_write_plan *first = &s->plan[0],
					      *last = &s->plan[c->n - 1];
		uint64_t fs, fe, ls, le;

		ret = plan_make(s, c, l1_idx, &m->plan);
		if (ret < 0)
			return ret;
		plan_region(s, first, &fs, &fe);
		plan_region(s, last, &ls, &le);
		m->file_off = m->plan->c[0].host + first->woff;
		m->region_off = first->cstart + fs;
		m->region_len = last->cstart + le - m->region_off;
		m->lock_off = first->cstart;
		m->lock_len = last->cstart + s->cluster_size - first->cstart;
	}
	if (s->crypt) {
		m->flags |= IMG_EXT_ENCRYPTED;
		m->cipher = qcow2_crypt_cipher(s);
	}
	region_host =
		m->file_off - (off - (m->region_len ? m->region_off : off));
	if (!qcow2_has_data_file(s)) {
		ret = qcow2_overlap_check(s, 0, region_host,
					  m->region_len ? m->region_len :
							  m->len);
		if (ret < 0)
			goto fail;
	}
	ret = qcow2_bitmap_mark(s, off, m->len);
	if (ret >= 0)
		return 0;
fail:
	if (m->plan) {
		qcow2_commit(s->img, m->plan, ret);
		m->plan = NULL;
	}
	return ret;
}

/*
 * .map for a write. One L2 table at most: a run of clusters this image
 * owns (COPIED) and overwrites in place, contiguous on the host; or a plan
 * (struct img_plan): the clusters that need new host clusters, allocated
 * here in one contiguous run (refcounts first, as the crash-safe order
 * wants), or one cluster whose entry changes in place (a preallocated zero
 * cluster, subclusters of extended L2). The core writes the data, with the
 * copy-on-write edges plan_region asks for, and then calls qcow2_commit,
 * which points the entries at it.
 */
static int qcow2_map_write(struct qcow2 *s, uint64_t off, uint64_t len,
			   struct img_map *m)
{
	static const struct qcow2_walker writer = {
		.flags = QCOW2_WALK_ALLOC | QCOW2_WALK_CLUSTERS,
		.run = wmap_run,
	};
	static const struct qcow2_walker peeker = {
		.flags = QCOW2_WALK_CLUSTERS,
		.run = wmap_run,
	};
	unsigned cover = qcow2_l2_cover_bits(s);
	uint64_t l1_idx = off >> cover;
	struct wmap_ctx c = { .peek = m->write == IMG_MAP_WRITE_IN_PLACE };
	int ret;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	len = img_min(len, ((l1_idx + 1) << cover) - off);
	if (c.peek &&
	    (l1_idx >= s->l1_size || !(s->l1[l1_idx] & QCOW2_OFLAG_COPIED))) {
		m->len = len;
		m->flags = 0;
		return 0;
	}
	ret = qcow2_walk(s, off, len, c.peek ? &peeker : &writer, &c);
	if (ret < 0)
		return ret;
	return wmap_fill(s, &c, off, l1_idx, m);
}

int qcow2_commit(struct img *img, struct img_plan *plan, int result)
{
	struct qcow2 *s = img_priv(img);
	uint8_t *t = NULL;
	int ret = 0;

	if (result < 0) {
		/* No table names the new clusters: give them back. */
		if (plan->n_alloc)
			ret = qcow2_free_clusters_now(
				s, plan->base,
				plan->n_alloc << s->cluster_bits);
		free(plan);
		return ret;
	}
	if (plan->flush_data)
		ret = img_io_flush(s->data_file);
	if (ret == 0)
		ret = qcow2_l2_get(s, plan->l1_idx, true, &t);
	for (unsigned k = 0; ret == 0 && k < plan->n; k++) {
		const struct qcow2_write_plan *p = &plan->c[k];
		uint64_t l2e = qcow2_l2e_at(s, t, p->idx),
			 bm = qcow2_bitmap_at(s, t, p->idx), nl2e, nbm;

		if (l2e != p->l2e || bm != p->bitmap) {
			ret = img_error(-EIO,
					"qcow2: the L2 entry of guest offset "
					"%#" PRIx64
					" changed under a write in flight",
					p->cstart);
			break;
		}
		plan_entry(s, p, &nl2e, &nbm);
		if (nl2e == l2e && nbm == bm)
			continue;
		if (p->alloc && qcow2_l2_has_host(s, l2e) &&
		    !qcow2_has_data_file(s)) {
			ret = qcow2_free_cluster_deferred(
				s, l2e & QCOW2_L2E_OFFSET_MASK);
			if (ret < 0)
				break;
		}
		if (l2e & QCOW2_OFLAG_COMPRESSED) {
			ret = qcow2_compressed_free(s, l2e);
			if (ret < 0)
				break;
		}
		qcow2_l2e_put(s, t, p->idx, nl2e, nbm);
		img_cache_mark_dirty(s->l2_cache, t);
	}
	if (t)
		img_cache_put(s->l2_cache, t);
	free(plan);
	if (ret == 0 && s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		ret = qcow2_metadata_write_back(s);
	return ret;
}

/* ---- zero and discard ---- */

enum zero_mode {
	ZM_ZERO, /* zero flag, keeping preallocated clusters */
	ZM_ZERO_UNMAP, /* zero flag, releasing clusters */
	ZM_DEALLOC, /* unallocated (backing shows through) */
	ZM_DISCARD, /* QEMU's discard: zero flag when it matters */
};

struct zero_ctx {
	enum zero_mode mode;
	bool backing, zflag;
};

/* Should a whole-cluster zero or discard drop the entry's host cluster? */
static bool zero_drops(const struct qcow2 *s, const struct zero_ctx *c,
		       uint64_t l2e, bool host)
{
	if (qcow2_has_data_file(s) && c->mode == ZM_ZERO)
		return false;
	switch (c->mode) {
	case ZM_ZERO:
		return !(l2e & QCOW2_OFLAG_COPIED) || !host;
	case ZM_DISCARD:
		return !qcow2_has_data_file(s);
	default:
		return true;
	}
}

static int zero_run(struct qcow2 *s, const struct qcow2_run *r, void *opaque)
{
	struct zero_ctx *c = opaque;
	uint64_t cstart = r->off & ~(s->cluster_size - 1);
	uint64_t l2e = r->e.l2e, bm = r->e.bitmap, nl2e = l2e, nbm = bm;
	bool whole = r->len == s->cluster_size;
	bool host = r->e.has_host;
	int ret;

	/* Part of a compressed cluster: real zeroes, which the core writes
	 * (through a copy-on-write). */
	if ((l2e & QCOW2_OFLAG_COMPRESSED) && !whole)
		return img_error(
			-ENOTSUP,
			"qcow2: zeroing part of the compressed cluster "
			"at %#" PRIx64 " needs data writes",
			cstart);
	if (s->extended_l2 && !whole) {
		uint64_t m = qcow2_l2_subcluster_mask(s, r->off - cstart,
						      r->off - cstart + r->len);

		if (c->mode == ZM_DEALLOC)
			nbm = bm & ~m & ~(m << 32);
		else
			nbm = (bm & ~m) | (m << 32);
	} else {
		bool drop = zero_drops(s, c, l2e, host);

		if (c->mode == ZM_DISCARD && !qcow2_has_data_file(s) &&
		    !c->backing && !host && !(l2e & QCOW2_OFLAG_COMPRESSED) &&
		    !(l2e & QCOW2_OFLAG_ZERO) && !(bm & QCOW2_EXTL2_ALL_ZERO))
			return 0;
		if (drop)
			nl2e = 0;
		if (c->mode == ZM_DEALLOC ||
		    (c->mode == ZM_DISCARD && !c->zflag)) {
			nl2e = 0;
			nbm = 0;
		} else if (s->extended_l2) {
			nbm = QCOW2_EXTL2_ALL_ZERO;
		} else {
			nl2e |= QCOW2_OFLAG_ZERO;
		}
		if (!drop && !host)
			nl2e &= ~QCOW2_OFLAG_COPIED;
		if (drop && host && !qcow2_has_data_file(s)) {
			ret = qcow2_free_cluster_deferred(
				s, l2e & QCOW2_L2E_OFFSET_MASK);
			if (ret < 0)
				return ret;
		}
		if (drop && (l2e & QCOW2_OFLAG_COMPRESSED)) {
			ret = qcow2_compressed_free(s, l2e);
			if (ret < 0)
				return ret;
		}
	}
	if (nl2e != l2e || nbm != bm) {
		qcow2_l2e_put(s, r->table, r->idx, nl2e, nbm);
		img_cache_mark_dirty(s->l2_cache, r->table);
	}
	return 0;
}

/* Change the entries of [off, off + len), aligned to subclusters (whole
 * clusters without extended L2). */
static int zero_entries(struct qcow2 *s, uint64_t off, uint64_t len,
			enum zero_mode mode)
{
	struct zero_ctx c = { mode, image_has_backing(s), s->h.version >= 3 };
	struct qcow2_walker w = {
		.flags = QCOW2_WALK_ALLOC | QCOW2_WALK_CLUSTERS,
		.run = zero_run,
	};
	uint64_t end = off + len;

	/* A missing table already reads as zeroes without a backing file. */
	if (!c.backing || mode == ZM_DISCARD || mode == ZM_DEALLOC)
		w.flags |= QCOW2_WALK_SKIP_HOLES;
	int ret = qcow2_walk(s, off, end - off, &w, &c);

	if (ret < 0)
		return ret;
	if (s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		return qcow2_metadata_write_back(s);
	return 0;
}

static int qcow2_discard(struct img *img, uint64_t off, uint64_t len)
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
 * Zero by changing entries only. What that cannot do (partial subclusters,
 * part of a compressed cluster, a v2 image without the zero flag) is
 * -ENOTSUP, and the core writes real zeroes there (it splits requests at
 * the subcluster alignment img_set_zero_align gave it).
 */
int qcow2_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags)
{
	struct qcow2 *s = img_priv(img);
	uint64_t g = 1ull << s->subcluster_bits, end = off + len, b;
	enum zero_mode mode;
	int ret;

	if (flags & IMG_ZERO_DISCARD)
		return qcow2_discard(img, off, len);
	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	/* Dirty bitmaps see the request even where the core writes the
	 * zeroes, or finds nothing to write. */
	ret = qcow2_bitmap_mark(s, off, len);
	if (ret < 0)
		return ret;
	if (s->data_file_raw) {
		return img_io_zero(
			s->data_file, off, len,
			(flags & IMG_ZERO_MAY_UNMAP) ? IMG_IO_ZERO_PUNCH : 0);
	}
	b = end == img_size(img) ? img_align_up(end, g) : end & ~(g - 1);
	if (s->h.version >= 3)
		mode = (flags & IMG_ZERO_MAY_UNMAP) ? ZM_ZERO_UNMAP : ZM_ZERO;
	else if (!image_has_backing(s) && (flags & IMG_ZERO_MAY_UNMAP))
		mode = ZM_DEALLOC;
	else
		return img_error(-ENOTSUP,
				 "qcow2: a v2 image has no zero flag: zeroing "
				 "%#" PRIx64 "+%#" PRIx64 " needs data writes",
				 off, len);
	if (off & (g - 1) || b < end)
		return img_error(-ENOTSUP,
				 "qcow2: zeroing %#" PRIx64 "+%#" PRIx64
				 " would need data writes",
				 off, len);
	return zero_entries(s, off, b - off, mode);
}

/* ---- preallocation ---- */

struct prealloc_ctx {
	enum img_prealloc mode;
	unsigned n; /* clusters of the current table without a host cluster */
	uint64_t tstart, tend; /* the guest clusters walked in that table */
	uint64_t data_end; /* past the last host byte preallocated */
};

static int prealloc_run(struct qcow2 *s, const struct qcow2_run *r,
			void *opaque)
{
	struct prealloc_ctx *c = opaque;
	uint64_t cstart = r->off & ~(s->cluster_size - 1);

	if (!c->tend)
		c->tstart = cstart;
	c->tend = cstart + s->cluster_size;
	if (r->e.has_host)
		return 0;
	if (c->n == s->plan_cap &&
	    grow((void **)&s->plan, &s->plan_cap, sizeof(*s->plan)) < 0)
		return -ENOMEM;
	s->plan[c->n++] = (struct qcow2_write_plan){ .idx = r->idx,
						     .cstart = cstart,
						     .bitmap = r->e.bitmap };
	return 0;
}

/* Give the clusters of table t without one a host cluster, then make the
 * host range read as zeroes (reused clusters hold old data) and reserve or
 * write it as the mode asks. */
static int prealloc_table_end(struct qcow2 *s, uint8_t *t, void *opaque)
{
	struct prealloc_ctx *c = opaque;
	bool df = qcow2_has_data_file(s);
	unsigned n = c->n;
	uint64_t base = 0, r_off, r_len, fsize;
	int ret;

	/* With a data file the whole walked range, as host == guest there. */
	r_off = df ? c->tstart : 0;
	r_len = df ? c->tend - c->tstart : (uint64_t)n << s->cluster_bits;
	c->n = 0;
	c->tend = 0;
	if (!n)
		return 0;
	if (!df) {
		ret = qcow2_alloc_clusters(s, n, &base);
		if (ret < 0)
			return ret;
		r_off = base;
	}
	for (unsigned k = 0; k < n; k++) {
		const struct qcow2_write_plan *p = &s->plan[k];
		uint64_t host = df ? p->cstart :
				     base + ((uint64_t)k << s->cluster_bits);

		qcow2_l2e_put(s, t, p->idx, host | QCOW2_OFLAG_COPIED,
			      p->bitmap & ~QCOW2_EXTL2_ALLOC_MASK);
	}
	img_cache_mark_dirty(s->l2_cache, t);
	ret = img_io_size(s->data_file, &fsize);
	if (ret == 0 && r_off < fsize && !df)
		ret = img_io_zero(s->data_file, r_off,
				  img_min(r_len, fsize - r_off),
				  IMG_IO_ZERO_PUNCH);
	if (ret == 0 && c->mode == IMG_PREALLOC_FALLOC)
		ret = img_io_allocate(s->data_file, r_off, r_len);
	else if (ret == 0 && c->mode == IMG_PREALLOC_FULL)
		ret = img_io_zero(s->data_file, r_off, r_len, 0);
	if (ret < 0)
		return ret;
	if (r_off + r_len > c->data_end)
		c->data_end = r_off + r_len;
	return 0;
}

int qcow2_preallocate(struct qcow2 *s, uint64_t off, uint64_t len,
		      enum img_prealloc mode)
{
	static const struct qcow2_walker preallocator = {
		.flags = QCOW2_WALK_ALLOC | QCOW2_WALK_CLUSTERS,
		.run = prealloc_run,
		.table_end = prealloc_table_end,
	};
	uint64_t start = off & ~(s->cluster_size - 1), size;
	struct prealloc_ctx c = { .mode = mode };
	int ret;

	ret = qcow2_walk(s, start, off + len - start, &preallocator, &c);
	if (ret < 0 || !c.data_end)
		return ret;
	ret = img_io_size(s->data_file, &size);
	if (ret == 0 && size < c.data_end)
		ret = img_io_truncate(s->data_file, c.data_end);
	return ret;
}
