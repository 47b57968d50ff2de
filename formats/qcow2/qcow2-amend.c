/* SPDX-License-Identifier: MIT */
/*
 * qcow2 amend (qemu-img amend -o) and make_empty (after a commit).
 *
 * Amend runs in QEMU 7.2's order: upgrade to compat=1.1 first, then the
 * refcount width, data file settings, the backing file, lazy refcounts, and
 * the downgrade to compat=0.10 last (after the features it cannot keep were
 * dropped). Messages and refusals are qemu-img's; beyond it, backing_file and
 * backing_fmt may be changed (a header-only change, as rebase -u; qemu-img
 * 7.2 refuses). Encryption options (LUKS key slots) are handled by
 * qcow2_crypt_amend (qcow2-crypt.c).
 *
 * Refcount width change, crash-safe: the new refcount blocks and table are
 * allocated in free clusters through the old structures (repeated until the
 * allocations themselves are covered), filled with every cluster's refcount
 * (snapshot references included, as they are already counted), written and
 * flushed; one header write then switches refcount_order and the table; the
 * old blocks and table are freed through the new structures last. A crash
 * before the switch leaves the old image (with at worst leaked clusters),
 * after it the new one with the old structures leaked.
 *
 * Downgrade expands zero clusters as QEMU does: a zero cluster with a host
 * cluster gets that cluster zeroed and keeps it, one without becomes
 * unallocated when the image has no backing file and a new zeroed cluster
 * otherwise; the L2 entries are written (after the refcounts and the zeroes,
 * by the cache dependency) and flushed before the header says version 2.
 * Tables shared with internal snapshots are changed in place (the new
 * cluster gets the table's refcount), snapshot tables too.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* QEMU's option list for amend (qemu-img amend -o help). */
const struct img_opt_desc qcow2_amend_opts[] = {
	{ "backing_file", IMG_OPT_STR, "File name of a base image", NULL },
	{ "backing_fmt", IMG_OPT_STR, "Image format of the base image", NULL },
	{ "compat", IMG_OPT_STR, "Compatibility level (v2 [0.10] or v3 [1.1])",
	  NULL },
	{ "data_file", IMG_OPT_STR, "File name of an external data file",
	  NULL },
	{ "data_file_raw", IMG_OPT_BOOL,
	  "The external data file must stay valid as a raw image", NULL },
	{ "encrypt.iter-time", IMG_OPT_NUM,
	  "Time to spend in PBKDF in milliseconds", NULL },
	{ "encrypt.keyslot", IMG_OPT_NUM,
	  "Select a single keyslot to modify explicitly", NULL },
	{ "encrypt.new-secret", IMG_OPT_STR,
	  "New secret to set in the matching keyslots. Empty string to erase",
	  NULL },
	{ "encrypt.old-secret", IMG_OPT_STR,
	  "Select all keyslots that match this password", NULL },
	{ "encrypt.state", IMG_OPT_STR,
	  "Select new state of affected keyslots (active/inactive)", NULL },
	{ "lazy_refcounts", IMG_OPT_BOOL, "Postpone refcount updates", NULL },
	{ "refcount_bits", IMG_OPT_NUM,
	  "Width of a reference count entry in bits", NULL },
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ NULL, 0, NULL, NULL },
};

/* Create options amend does not take (qemu-img names them so). */
static const char *const create_only[] = {
	"cluster_size",	  "compression_type", "encryption",
	"encrypt.format", "extended_l2",      "preallocation",
};

struct amend_params {
	unsigned version;
	bool lazy;
	uint64_t refcount_bits;
	bool set_backing, set_backing_fmt, set_data_file, data_file_raw;
	const char *backing_file, *backing_fmt, *data_file;
	bool encrypt;
};

static bool listed(const char *key)
{
	for (const struct img_opt_desc *d = qcow2_amend_opts; d->name; d++)
		if (!strcmp(d->name, key))
			return true;
	return false;
}

static int check_keys(const struct img_kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *key = kv[i].key ? kv[i].key : "";

		if (listed(key))
			continue;
		for (size_t j = 0; j < IMG_ARRAY_SIZE(create_only); j++)
			if (!strcmp(key, create_only[j]))
				return img_error(
					-EINVAL,
					"Invalid parameter '%s'\nThis option is only supported for image creation",
					key);
		return img_error(-EINVAL, "Invalid parameter '%s'", key);
	}
	return 0;
}

static bool format_known(const char *fmt)
{
	for (const char *const *f = img_formats(); *f; f++)
		if (!strcmp(*f, fmt))
			return true;
	return false;
}

static int parse_params(struct qcow2 *s, const struct img_kv *kv, size_t n,
			struct amend_params *p)
{
	const struct img_create_opts o = { .opts = kv, .n_opts = n };
	const char *compat = NULL;
	int ret;

	ret = check_keys(kv, n);
	if (ret < 0)
		return ret;
	memset(p, 0, sizeof(*p));
	p->version = s->h.version;
	p->lazy = s->lazy_refcounts;
	p->refcount_bits = s->refcount_bits;
	p->data_file_raw = s->data_file_raw;
	for (size_t i = 0; i < n; i++)
		if (!strncmp(kv[i].key, "encrypt.", 8))
			p->encrypt = true;
	if ((ret = img_opt_str(&o, "compat", &compat)) < 0 ||
	    (ret = img_opt_bool(&o, "lazy_refcounts", &p->lazy)) < 0 ||
	    (ret = img_opt_u64(&o, "refcount_bits", &p->refcount_bits)) < 0 ||
	    (ret = img_opt_bool(&o, "data_file_raw", &p->data_file_raw)) < 0)
		return ret;
	if ((ret = img_opt_str(&o, "backing_file", &p->backing_file)) < 0)
		return ret;
	p->set_backing = ret > 0;
	if ((ret = img_opt_str(&o, "backing_fmt", &p->backing_fmt)) < 0)
		return ret;
	p->set_backing_fmt = ret > 0;
	if ((ret = img_opt_str(&o, "data_file", &p->data_file)) < 0)
		return ret;
	p->set_data_file = ret > 0;

	if (compat) {
		p->version = qcow2_compat_version(compat);
		if (!p->version)
			return img_error(-EINVAL,
					 "Unknown compatibility level %s",
					 compat);
	}
	if (!img_is_pow2(p->refcount_bits) || p->refcount_bits > 64)
		return img_error(
			-EINVAL,
			"Refcount width must be a power of two and may not exceed 64 bits");
	if (p->encrypt && !s->h.crypt_method)
		return img_error(
			-EINVAL,
			"Can't amend encryption options - encryption not present");
	if (p->encrypt && s->h.crypt_method != QCOW2_CRYPT_LUKS)
		return img_error(-ENOTSUP,
				 "Only LUKS encryption options can be amended");
	if (p->set_data_file && !s->data_file_name)
		return img_error(
			-EINVAL,
			"data-file can only be set for images that use an external data file");
	if (p->set_data_file && (!p->data_file || !*p->data_file))
		return img_error(
			-EINVAL,
			"qcow2: the external data file name cannot be empty");
	if (p->set_data_file && strlen(p->data_file) > QCOW2_MAX_BACKING_NAME)
		return img_error(
			-EINVAL,
			"qcow2: data file name is longer than %d bytes",
			QCOW2_MAX_BACKING_NAME);
	if (p->data_file_raw && !s->data_file_raw)
		return img_error(
			-EINVAL,
			"data-file-raw cannot be set on existing images");
	if (p->set_backing_fmt && p->backing_fmt && *p->backing_fmt &&
	    !format_known(p->backing_fmt))
		return img_error(-EINVAL, "Unknown backing format '%s'",
				 p->backing_fmt);
	return 0;
}

static void step(const struct img_progress *progress, uint64_t *done,
		 uint64_t total)
{
	++*done;
	if (progress && progress->fn)
		progress->fn(progress->opaque, *done, total);
}

static int write_header(struct qcow2 *s)
{
	int ret = qcow2_header_write(s, s->backing_name);

	return ret < 0 ? ret : img_io_flush(s->file);
}

/* Everything cached on disk and stable; the dirty bit cleared. */
static int make_clean(struct qcow2 *s)
{
	int ret = qcow2_metadata_write_back(s);

	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret == 0 && s->h.version >= 3 &&
	    (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY))
		ret = qcow2_set_incompat(s, QCOW2_INCOMPAT_DIRTY, false);
	if (ret == 0)
		s->dirty_set = false;
	return ret;
}

/* ---- the snapshot table, as far as amend needs it ---- */

struct snap_view {
	uint64_t l1_off;
	uint32_t l1_size;
	uint32_t extra_size;
	uint64_t vm_state_size;
	uint64_t disk_size; /* the image size when the entry has none */
};

/* Read the l1 location and extra data of every snapshot (validated). */
static int read_snapshots(struct qcow2 *s, struct snap_view **out)
{
	uint64_t off = s->h.snapshots_offset;
	struct snap_view *v;
	uint8_t hdr[40], extra[16];
	int ret = 0;

	*out = NULL;
	if (!s->h.nb_snapshots)
		return 0;
	v = calloc(s->h.nb_snapshots, sizeof(*v));
	if (!v)
		return img_error(-ENOMEM, "qcow2: out of memory");
	for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
		uint32_t id_len, name_len;

		ret = img_io_pread(s->file, hdr, sizeof(hdr), off);
		if (ret < 0)
			goto fail;
		v[i].l1_off = img_be64(hdr);
		v[i].l1_size = img_be32(hdr + 8);
		id_len = img_be16(hdr + 12);
		name_len = img_be16(hdr + 14);
		v[i].vm_state_size = img_be32(hdr + 32);
		v[i].extra_size = img_be32(hdr + 36);
		v[i].disk_size = s->h.size;
		if (v[i].extra_size > 1024 ||
		    (v[i].l1_off & (s->cluster_size - 1)) ||
		    (uint64_t)v[i].l1_size * 8 > QCOW2_MAX_L1_BYTES) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: snapshot %u at %#" PRIx64
					" is invalid",
					i, off);
			goto fail;
		}
		memset(extra, 0, sizeof(extra));
		ret = img_io_pread(s->file, extra,
				   img_min(v[i].extra_size, sizeof(extra)),
				   off + 40);
		if (ret < 0)
			goto fail;
		if (v[i].extra_size >= 8)
			v[i].vm_state_size = img_be64(extra);
		if (v[i].extra_size >= 16)
			v[i].disk_size = img_be64(extra + 8);
		off += img_align_up(
			40 + (uint64_t)v[i].extra_size + id_len + name_len, 8);
	}
	*out = v;
	return 0;
fail:
	free(v);
	return ret;
}

/* ---- upgrade and downgrade ---- */

static int upgrade(struct qcow2 *s)
{
	struct snap_view *v;
	int ret = read_snapshots(s, &v);

	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
		if (v[i].extra_size < 16) {
			free(v);
			/* compat=1.1 needs each entry's 64-bit VM state
			 * size and disk size; rewriting the table belongs
			 * to the snapshot code. */
			return img_error(
				-ENOTSUP,
				"qcow2: upgrading an image whose snapshot table lacks version 3 data is not supported yet");
		}
	}
	free(v);
	s->h.version = 3;
	s->h.header_length = QCOW2_HEADER_LENGTH;
	s->h.incompatible_features = 0;
	s->h.compatible_features = 0;
	s->h.autoclear_features = 0;
	s->h.compression_type = QCOW2_COMPRESSION_ZLIB;
	ret = write_header(s);
	if (ret < 0)
		s->h.version = 2;
	return ret;
}

/*
 * Turn the zero clusters of the L2 table at l2_off into data clusters, as
 * QEMU does. The table may be shared (with snapshots): it is changed in
 * place for every referrer, and a new cluster gets the table's refcount.
 */
static int expand_l2(struct qcow2 *s, uint64_t l2_off, bool *compressed)
{
	bool backing = s->backing_name != NULL, dirty = false;
	uint64_t l2_rc;
	uint8_t *t;
	int ret = qcow2_refcount_get(s, l2_off >> s->cluster_bits, &l2_rc);

	if (ret == 0 && !l2_rc)
		ret = qcow2_signal_corruption(s,
					      "qcow2: L2 table at %#" PRIx64
					      " has refcount 0",
					      l2_off);
	if (ret == 0)
		ret = img_cache_get(s->l2_cache, l2_off, (void **)&t);
	if (ret < 0)
		return ret;
	for (uint64_t j = 0; j < s->l2_entries; j++) {
		uint64_t l2e = img_be64(t + 8 * j), host;
		enum qcow2_cluster_type type =
			qcow2_subcluster_type(s, l2e, 0, 0);

		if (type == QCOW2_CLUSTER_COMPRESSED)
			*compressed = true;
		if (type == QCOW2_CLUSTER_ZERO_ALLOC) {
			host = l2e & QCOW2_L2E_OFFSET_MASK;
			l2e &= ~QCOW2_OFLAG_ZERO;
		} else if (type == QCOW2_CLUSTER_ZERO_PLAIN && !backing) {
			l2e = 0;
			host = 0;
		} else if (type == QCOW2_CLUSTER_ZERO_PLAIN) {
			ret = qcow2_alloc_clusters(s, 1, &host);
			if (ret == 0 && l2_rc > 1)
				ret = qcow2_refcount_update(s, host,
							    s->cluster_size,
							    (int64_t)l2_rc - 1);
			if (ret < 0)
				break;
			l2e = host | (l2_rc == 1 ? QCOW2_OFLAG_COPIED : 0);
		} else {
			continue;
		}
		/* The zeroes reach the disk before the entry (the L2 cache
		 * writes after a flush of the refcount blocks). */
		if (host) {
			ret = qcow2_overlap_check(s, 0, host, s->cluster_size);
			if (ret == 0)
				ret = img_io_zero(s->file, host,
						  s->cluster_size, 0);
			if (ret < 0)
				break;
		}
		img_put_be64(t + 8 * j, l2e);
		dirty = true;
	}
	if (dirty)
		img_cache_mark_dirty(s->l2_cache, t);
	img_cache_put(s->l2_cache, t);
	return ret;
}

/* Expand the zero clusters of every L2 table, active and in snapshots. */
static int expand_zero_clusters(struct qcow2 *s, bool *compressed)
{
	struct snap_view *v;
	int ret = read_snapshots(s, &v);

	for (uint64_t i = 0; i < s->l1_size && ret == 0; i++)
		if (s->l1[i] & QCOW2_L1E_OFFSET_MASK)
			ret = expand_l2(s, s->l1[i] & QCOW2_L1E_OFFSET_MASK,
					compressed);
	for (uint32_t i = 0; i < s->h.nb_snapshots && ret == 0; i++) {
		uint64_t bytes = (uint64_t)v[i].l1_size * 8;
		uint8_t *l1 = malloc(bytes ? bytes : 1);

		if (!l1) {
			ret = img_error(-ENOMEM, "qcow2: out of memory");
			break;
		}
		ret = bytes ? img_io_pread(s->file, l1, bytes, v[i].l1_off) : 0;
		for (uint32_t k = 0; k < v[i].l1_size && ret == 0; k++) {
			uint64_t l2 = img_be64(l1 + 8 * k) &
				      QCOW2_L1E_OFFSET_MASK;

			if (l2 & (s->cluster_size - 1))
				ret = img_error(
					-IMG_ECORRUPT,
					"qcow2: snapshot L2 table offset %#" PRIx64
					" is not aligned",
					l2);
			else if (l2)
				ret = expand_l2(s, l2, compressed);
		}
		free(l1);
	}
	free(v);
	if (ret == 0)
		ret = qcow2_metadata_write_back(s);
	if (ret == 0)
		ret = img_io_flush(s->file);
	return ret;
}

static int downgrade(struct qcow2 *s)
{
	struct snap_view *v;
	bool compressed = false;
	int ret;

	if (s->h.refcount_order != 4)
		return img_error(-ENOTSUP,
				 "compat=0.10 requires refcount_bits=16");
	if (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
		return img_error(-ENOTSUP,
				 "Cannot downgrade an image with a data file");
	ret = read_snapshots(s, &v);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
		if (v[i].vm_state_size > UINT32_MAX ||
		    v[i].disk_size != s->h.size) {
			free(v);
			return img_error(
				-ENOTSUP,
				"Internal snapshots prevent downgrade of image");
		}
	}
	free(v);
	ret = make_clean(s);
	if (ret < 0)
		return img_error(ret, "Failed to make the image clean: %s",
				 img_last_error());
	if (s->h.incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION)
		return img_error(
			-ENOTSUP,
			"Cannot downgrade an image with incompatible features 0x%" PRIx64
			" set",
			(uint64_t)(s->h.incompatible_features &
				   ~QCOW2_INCOMPAT_COMPRESSION));
	ret = expand_zero_clusters(s, &compressed);
	if (ret < 0)
		return img_error(ret,
				 "Failed to turn zero into data clusters: %s",
				 img_last_error());
	if ((s->h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
	    compressed)
		return img_error(
			-ENOTSUP,
			"Cannot downgrade an image with zstd compression type and existing compressed clusters");
	s->h.version = 2;
	s->h.header_length = QCOW2_V2_HEADER_SIZE;
	s->h.incompatible_features = 0;
	s->h.compatible_features = 0;
	s->h.autoclear_features = 0;
	s->h.compression_type = QCOW2_COMPRESSION_ZLIB;
	s->lazy_refcounts = false;
	s->data_file_raw = false;
	free(s->header_tail);
	s->header_tail = NULL;
	s->header_tail_len = 0;
	return write_header(s);
}

/* ---- refcount width ---- */

/* Store v as entry i of a refcount block of 1 << order bits per entry
 * (sub-byte entries from the least significant bit, wider ones big
 * endian). */
static void put_refcount(uint8_t *rb, unsigned order, uint64_t i, uint64_t v)
{
	unsigned bits = 1u << order;

	if (bits < 8) {
		unsigned per_byte = 8 / bits,
			 shift = (unsigned)(i % per_byte) * bits;
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);

		rb[i / per_byte] = (uint8_t)((rb[i / per_byte] & ~mask) |
					     ((v << shift) & mask));
		return;
	}
	for (unsigned b = 0; b < bits / 8; b++)
		rb[i * (bits / 8) + b] = (uint8_t)(v >> (bits - 8 - 8 * b));
}

struct new_refs {
	unsigned order;
	uint64_t entries; /* refcounts per new block */
	uint64_t *table; /* new reftable (host offsets), n_table entries */
	uint64_t n_table;
	uint64_t table_off, table_clusters;
};

static int range_in_use(struct qcow2 *s, uint64_t first, uint64_t end,
			bool *used)
{
	*used = false;
	for (uint64_t c = first; c < end; c++) {
		uint64_t rc;
		int ret = qcow2_refcount_get(s, c, &rc);

		if (ret < 0)
			return ret;
		if (rc) {
			*used = true;
			return 0;
		}
	}
	return 0;
}

/* Allocate (through the old structures) a block for every range of the
 * new width that holds a used cluster, and the new table, until the
 * allocations are covered too. */
static int alloc_new_refs(struct qcow2 *s, struct new_refs *nr)
{
	uint64_t cs = s->cluster_size;

	for (;;) {
		uint64_t end, blocks, need_tc;
		bool changed = false;
		int ret = qcow2_refcount_end(s, &end);

		if (ret < 0)
			return ret;
		blocks = (end + nr->entries - 1) / nr->entries;
		if (blocks > nr->n_table) {
			uint64_t *t = realloc(nr->table, blocks * 8);

			if (!t)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			memset(t + nr->n_table, 0, (blocks - nr->n_table) * 8);
			nr->table = t;
			nr->n_table = blocks;
		}
		for (uint64_t j = 0; j < blocks; j++) {
			bool used;

			if (nr->table[j])
				continue;
			ret = range_in_use(s, j * nr->entries,
					   img_min(end, (j + 1) * nr->entries),
					   &used);
			if (ret < 0)
				return ret;
			if (!used)
				continue;
			ret = qcow2_alloc_clusters(s, 1, &nr->table[j]);
			if (ret < 0)
				return ret;
			changed = true;
		}
		need_tc = (blocks * 8 + cs - 1) / cs;
		if (need_tc * cs > QCOW2_MAX_REFTABLE_BYTES)
			return img_error(
				-ENOSPC,
				"qcow2: new refcount table would need %" PRIu64
				" clusters",
				need_tc);
		if (need_tc > nr->table_clusters) {
			if (nr->table_clusters) {
				ret = qcow2_free_clusters_now(
					s, nr->table_off,
					nr->table_clusters * cs);
				if (ret < 0)
					return ret;
			}
			nr->table_clusters = 0;
			ret = qcow2_alloc_clusters(s, need_tc, &nr->table_off);
			if (ret < 0)
				return ret;
			nr->table_clusters = need_tc;
			changed = true;
		}
		if (!changed)
			return 0;
	}
}

/* Fill and write the new blocks and table (nothing names them yet). */
static int write_new_refs(struct qcow2 *s, const struct new_refs *nr)
{
	uint64_t cs = s->cluster_size;
	uint8_t *buf = malloc(cs);
	int ret = 0;

	if (!buf)
		return img_error(-ENOMEM, "qcow2: out of memory");
	for (uint64_t j = 0; j < nr->n_table && ret == 0; j++) {
		if (!nr->table[j])
			continue;
		memset(buf, 0, cs);
		for (uint64_t i = 0; i < nr->entries && ret == 0; i++) {
			uint64_t rc;

			ret = qcow2_refcount_get(s, j * nr->entries + i, &rc);
			if (ret == 0)
				put_refcount(buf, nr->order, i, rc);
		}
		if (ret == 0)
			ret = qcow2_overlap_check(s, 0, nr->table[j], cs);
		if (ret == 0)
			ret = img_io_pwrite(s->file, buf, cs, nr->table[j]);
	}
	free(buf);
	if (ret < 0)
		return ret;
	buf = calloc(nr->table_clusters, cs);
	if (!buf)
		return img_error(-ENOMEM, "qcow2: out of memory");
	for (uint64_t j = 0; j < nr->n_table; j++)
		img_put_be64(buf + 8 * j, nr->table[j]);
	ret = qcow2_overlap_check(s, 0, nr->table_off, nr->table_clusters * cs);
	if (ret == 0)
		ret = img_io_pwrite(s->file, buf, nr->table_clusters * cs,
				    nr->table_off);
	free(buf);
	return ret;
}

/* The refcount of every used cluster must fit the new width. */
static int check_fits(struct qcow2 *s, unsigned bits)
{
	uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1, end;
	int ret = qcow2_refcount_end(s, &end);

	for (uint64_t c = 0; c < end && ret == 0; c++) {
		uint64_t rc;

		ret = qcow2_refcount_get(s, c, &rc);
		if (ret == 0 && rc > max)
			return img_error(
				-EINVAL,
				"Cannot decrease refcount entry width to %u bits: Cluster at offset %#" PRIx64
				" has a refcount of %" PRIu64,
				bits, (uint64_t)(c << s->cluster_bits), rc);
	}
	return ret;
}

static int change_refcount_order(struct qcow2 *s, unsigned order)
{
	struct new_refs nr = {
		.order = order,
		.entries = s->cluster_size * 8 >> order,
	};
	uint64_t old_table_off = s->h.refcount_table_offset;
	uint64_t old_tc = s->h.refcount_table_clusters, old_n = 0;
	uint64_t *old_blocks = NULL;
	unsigned old_order = s->h.refcount_order;
	int ret;

	ret = check_fits(s, 1u << order);
	if (ret < 0)
		return ret;
	/* Settle pending frees so the counts copied are final. */
	ret = make_clean(s);
	if (ret < 0)
		return ret;
	ret = alloc_new_refs(s, &nr);
	if (ret == 0)
		ret = qcow2_metadata_write_back(s);
	if (ret == 0)
		ret = write_new_refs(s, &nr);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret < 0)
		goto out;

	old_blocks = malloc(s->reftable_size * 8);
	if (!old_blocks) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < s->reftable_size; i++)
		if (s->reftable[i])
			old_blocks[old_n++] = s->reftable[i];

	/* The switch: one header write. */
	s->h.refcount_order = order;
	s->h.refcount_table_offset = nr.table_off;
	s->h.refcount_table_clusters = (uint32_t)nr.table_clusters;
	ret = write_header(s);
	if (ret < 0) {
		s->h.refcount_order = old_order;
		s->h.refcount_table_offset = old_table_off;
		s->h.refcount_table_clusters = (uint32_t)old_tc;
		goto out;
	}
	img_cache_set_dependency(s->l2_cache, NULL);
	qcow2_refcount_release(s);
	s->refcount_bits = 1u << order;
	s->refcount_max = order == 6 ? UINT64_MAX :
				       (1ull << s->refcount_bits) - 1;
	s->refblock_entries = nr.entries;
	ret = qcow2_refcount_init(s);
	if (ret < 0) {
		/* The file is consistent; this open image is not. */
		s->read_only = true;
		s->corrupt = true;
		goto out;
	}
	img_cache_set_dependency(s->l2_cache, s->refblock_cache);

	/* The old structures are garbage now: free them (a crash here leaks
	 * them, nothing worse). */
	for (uint64_t i = 0; i < old_n && ret == 0; i++)
		ret = qcow2_free_clusters_now(s, old_blocks[i],
					      s->cluster_size);
	if (ret == 0)
		ret = qcow2_free_clusters_now(s, old_table_off,
					      old_tc * s->cluster_size);
	if (ret == 0)
		ret = qcow2_metadata_write_back(s);
	if (ret == 0)
		ret = img_io_flush(s->file);
out:
	free(old_blocks);
	free(nr.table);
	return ret;
}

/* ---- backing file and data file ---- */

static int amend_backing(struct img *img, struct qcow2 *s,
			 const struct amend_params *p)
{
	const char *name = p->set_backing ? p->backing_file : s->backing_name;
	const char *fmt = p->set_backing_fmt ? p->backing_fmt : s->backing_fmt;
	bool same_name, same_fmt;
	int ret;

	if (name && !*name)
		name = NULL;
	if (!name || (fmt && !*fmt))
		fmt = NULL;
	same_name = (!name && !s->backing_name) ||
		    (name && s->backing_name && !strcmp(name, s->backing_name));
	same_fmt = (!fmt && !s->backing_fmt) ||
		   (fmt && s->backing_fmt && !strcmp(fmt, s->backing_fmt));
	if (same_name && same_fmt)
		return 0;
	if (name && !fmt)
		return img_error(
			-EINVAL,
			"Could not change the backing file to '%s': backing format must be specified",
			name);
	ret = qcow2_set_backing(img, name, fmt);
	if (ret < 0)
		return ret;
	return img_set_backing_name(img, name, fmt);
}

static int amend_data_file(struct qcow2 *s, const struct amend_params *p)
{
	char *name = NULL, *old_name = s->data_file_name;
	uint64_t old_ac = s->h.autoclear_features;
	int ret;

	if (!p->data_file_raw)
		s->h.autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	if (p->set_data_file) {
		name = strdup(p->data_file);
		if (!name)
			return img_error(-ENOMEM, "qcow2: out of memory");
		s->data_file_name = name;
	}
	if (!name && s->h.autoclear_features == old_ac)
		return 0;
	ret = write_header(s);
	if (ret < 0) {
		s->data_file_name = old_name;
		s->h.autoclear_features = old_ac;
		free(name);
		return ret;
	}
	if (name)
		free(old_name);
	s->data_file_raw = p->data_file_raw;
	return 0;
}

static int amend_lazy(struct qcow2 *s, bool lazy, unsigned version)
{
	int ret;

	if (lazy == s->lazy_refcounts)
		return 0;
	if (lazy && version < 3)
		return img_error(
			-EINVAL,
			"Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
	if (!lazy) {
		ret = make_clean(s);
		if (ret < 0)
			return img_error(ret,
					 "Failed to make the image clean: %s",
					 img_last_error());
		s->h.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
	} else {
		s->h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	}
	ret = write_header(s);
	if (ret < 0) {
		s->h.compatible_features ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
		return ret;
	}
	s->lazy_refcounts = lazy;
	return 0;
}

int qcow2_amend(struct img *img, const struct img_kv *opts, size_t n,
		const struct img_progress *progress)
{
	struct qcow2 *s = img_priv(img);
	struct amend_params p;
	uint64_t total, done = 0;
	unsigned order = 0;
	int ret;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	ret = parse_params(s, opts, n, &p);
	if (ret < 0)
		return ret;
	if (p.encrypt) {
		/* LUKS key slots: qcow2-crypt.c. */
		ret = qcow2_crypt_amend(s, opts, n);
		if (ret < 0)
			return ret;
	}
	while ((1ull << order) < p.refcount_bits)
		order++;
	total = (p.version != s->h.version) +
		(p.refcount_bits != s->refcount_bits) + 1;
	if (p.version > s->h.version) {
		ret = upgrade(s);
		if (ret < 0)
			return ret;
		step(progress, &done, total);
	}
	if (p.refcount_bits != s->refcount_bits) {
		if (p.version < 3 && p.refcount_bits != 16)
			return img_error(
				-EINVAL,
				"Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
		ret = change_refcount_order(s, order);
		if (ret < 0)
			return ret;
		step(progress, &done, total);
	}
	ret = amend_data_file(s, &p);
	if (ret == 0)
		ret = amend_backing(img, s, &p);
	if (ret == 0)
		ret = amend_lazy(s, p.lazy, p.version);
	if (ret < 0)
		return ret;
	if (p.version < s->h.version) {
		ret = downgrade(s);
		if (ret < 0)
			return ret;
		step(progress, &done, total);
	}
	step(progress, &done, total);
	return 0;
}

/*
 * Unmap the L2 table of L1 entry i: the L1 entry is cleared first, and only
 * then are the table and the clusters only it references queued for release
 * (freed after that entry is stable), so a failed write frees nothing still
 * in use.
 */
static int drop_l2(struct qcow2 *s, uint64_t i)
{
	uint64_t l1e = s->l1[i], off = l1e & QCOW2_L1E_OFFSET_MASK;
	bool data_file = s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
	uint8_t zero[8] = { 0 }, *t;
	int ret = img_cache_get(s->l2_cache, off, (void **)&t);

	if (ret < 0)
		return ret;
	ret = img_io_pwrite(s->file, zero, sizeof(zero),
			    s->h.l1_table_offset + i * 8);
	if (ret < 0) {
		img_cache_put(s->l2_cache, t);
		return ret;
	}
	s->l1[i] = 0;
	/* A table a snapshot shares keeps its clusters. */
	for (uint64_t j = 0;
	     (l1e & QCOW2_OFLAG_COPIED) && j < s->l2_entries && ret == 0; j++) {
		uint64_t l2e = img_be64(t + j * s->l2_entry_size);

		if (l2e & QCOW2_OFLAG_COMPRESSED)
			ret = qcow2_compressed_free(s, l2e);
		else if ((l2e & QCOW2_L2E_OFFSET_MASK) && !data_file)
			ret = qcow2_free_cluster_deferred(
				s, l2e & QCOW2_L2E_OFFSET_MASK);
	}
	img_cache_put(s->l2_cache, t);
	if (ret == 0)
		ret = qcow2_free_cluster_deferred(s, off);
	if (ret == 0 && s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		ret = qcow2_metadata_write_back(s);
	return ret;
}

int qcow2_make_empty(struct img *img)
{
	struct qcow2 *s = img_priv(img);
	uint64_t end, file_size;
	int ret = 0;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	if (s->data_file_raw)
		return img_error(
			-ENOTSUP,
			"qcow2: an image with a raw external data file cannot be emptied");
	for (uint64_t i = 0; i < s->l1_size && ret == 0; i++)
		if (s->l1[i] & QCOW2_L1E_OFFSET_MASK)
			ret = drop_l2(s, i);
	if (ret == 0)
		ret = qcow2_metadata_write_back(s);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret == 0)
		ret = qcow2_refcount_end(s, &end);
	if (ret == 0)
		ret = img_io_size(s->file, &file_size);
	if (ret == 0 && (end << s->cluster_bits) < file_size)
		ret = img_io_truncate(s->file, end << s->cluster_bits);
	/* Give the host the space of the freed clusters below the end (their
	 * refcount of 0 is on disk: nothing references them). */
	for (uint64_t c = 0, run = 0; ret == 0 && c <= end; c++) {
		uint64_t rc = 1;

		if (c < end)
			ret = qcow2_refcount_get(s, c, &rc);
		if (ret == 0 && !rc) {
			run++;
			continue;
		}
		if (ret == 0 && run)
			ret = img_io_zero(s->file, (c - run) << s->cluster_bits,
					  run << s->cluster_bits,
					  IMG_IO_ZERO_PUNCH);
		run = 0;
	}
	return ret;
}
