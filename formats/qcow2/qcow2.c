/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 driver: probe, open, close, flush, info, create, resize and
 * set_backing, on top of qcow2-header.c (the first cluster),
 * qcow2-refcount.c (allocation), qcow2-cluster.c (L1 and L2 tables),
 * qcow2-l2.c (what an L2 entry means) and qcow2-map.c (the one L2 walk:
 * .map, block status and guest I/O).
 *
 * Format: QEMU docs/interop/qcow2.txt, versions 2 (compat=0.10) and 3
 * (compat=1.1); images are byte-compatible with QEMU 7.2 and created in its
 * layout (header_length 112, feature-name table, refcount table at cluster 1,
 * one refcount block at cluster 2, L1 table at cluster 3). Supported: cluster
 * sizes 512 B to 2 MiB, refcount widths 1 to 64 bits, extended L2 entries
 * (subcluster allocation), external data files (raw or not; followed
 * wherever the name points, as in QEMU, and refused for untrusted images),
 * zero clusters,
 * lazy refcounts, backing files, preallocation, resize, compressed clusters
 * (zlib and zstd, qcow2-compress.c), encryption (LUKS; legacy AES read
 * only; qcow2-crypt.c), internal snapshots (qcow2-snapshot.c; resize of
 * v2 images with snapshots is refused, as QEMU does). Persistent
 * dirty bitmaps: qcow2-bitmap.c.
 *
 * On-disk invariants kept: every cluster in use by metadata or data has a
 * refcount >= 1; an L1/L2 entry carries COPIED exactly when the refcount of
 * what it points to is 1; clusters of an external data file are not
 * refcounted and their host offset equals the guest offset.
 *
 * Crash consistency (without lazy refcounts), so that a crash at any point
 * leaves at worst leaked clusters:
 *  1. A refcount increment reaches the disk (refcount block write + flush)
 *     before any L2 or L1 entry that uses the cluster: the L2 cache depends
 *     on the refcount block cache (img_cache_set_dependency), and L1 entries
 *     are written only after the new L2 table and the refcount blocks are
 *     written and flushed.
 *  2. A new refcount block is written and flushed before the refcount table
 *     entry names it; a grown refcount table is written with its blocks past
 *     everything the old table covers, flushed, then the header switched
 *     (one write, flushed), then the old table freed. The L1 table grows
 *     the same way.
 *  3. Frees are deferred: a refcount drops only after the L2/L1 entries that
 *     dropped the reference are written and flushed (qcow2_metadata_write_back).
 * The refcount-before-L2 flush of rule 1 also makes the data (and the
 * copy-on-write of partial clusters) of newly allocated clusters stable
 * before an L2 entry exposes them, so a crash never shows stale contents of
 * a reused cluster; with an external data file (not refcounted) the data
 * file is flushed before new L2 entries are made instead.
 * With lazy refcounts, the dirty bit is set (and flushed) before the first
 * allocation and cleared after a clean write-back when the image is closed;
 * a dirty image gets its refcounts rebuilt when opened read-write (unless
 * IMG_OPEN_NO_REPAIR). The L2-after-refcount dependency is kept for the sake
 * of the data ordering above.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static int qcow2_probe(const uint8_t *buf, size_t len)
{
	uint32_t version;

	if (len < 8 || img_be32(buf) != QCOW2_MAGIC)
		return 0;
	version = img_be32(buf + 4);
	return version == 2 || version == 3 ? 100 : 50;
}

static void setup_geometry(struct qcow2 *s)
{
	const struct qcow2_header *h = &s->h;

	s->cluster_bits = h->cluster_bits;
	s->cluster_size = 1ull << h->cluster_bits;
	s->extended_l2 = h->incompatible_features & QCOW2_INCOMPAT_EXTL2;
	s->l2_entry_size = s->extended_l2 ? 16 : 8;
	s->l2_bits = h->cluster_bits - (s->extended_l2 ? 4 : 3);
	s->l2_entries = 1ull << s->l2_bits;
	s->subcluster_bits = s->extended_l2 ? h->cluster_bits - 5 :
					      h->cluster_bits;
	s->refcount_bits = 1u << h->refcount_order;
	s->refcount_max = h->refcount_order == 6 ?
				  UINT64_MAX :
				  (1ull << s->refcount_bits) - 1;
	s->refblock_entries = s->cluster_size * 8 / s->refcount_bits;
	s->lazy_refcounts = h->compatible_features &
			    QCOW2_COMPAT_LAZY_REFCOUNTS;
	s->data_file_raw = h->autoclear_features &
			   QCOW2_AUTOCLEAR_DATA_FILE_RAW;
}

static void release_state(struct qcow2 *s)
{
	qcow2_l2_release(s);
	qcow2_refcount_release(s);
	if (s->data_file && s->data_file != s->file)
		img_io_close(s->data_file);
	s->data_file = NULL;
	free(s->data_file_name);
	free(s->backing_fmt);
	free(s->backing_name);
	free(s->header_tail);
	for (size_t i = 0; i < s->n_unknown_exts; i++)
		free(s->unknown_exts[i].data);
	free(s->unknown_exts);
	free(s->feature_names);
	free(s->crypto_ext);
	free(s->bitmaps_ext);
	qcow2_crypt_close(s);
	qcow2_compress_release(s);
	qcow2_bitmap_release(s);
	memset(s, 0, sizeof(*s));
}

static int qcow2_open(struct img *img, unsigned flags)
{
	struct qcow2 *s = img_priv(img);
	uint64_t file_size;
	int ret;

	s->img = img;
	s->file = img_file(img);
	s->data_file = s->file;
	s->read_only = flags & IMG_OPEN_RDONLY;
	s->unmap = flags & IMG_OPEN_UNMAP;
	ret = qcow2_header_read(s);
	if (ret < 0)
		goto fail;
	setup_geometry(s);
	ret = qcow2_crypt_open(s, flags);
	if (ret < 0)
		goto fail;
	if (s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
		if (!s->read_only) {
			ret = img_error(
				-IMG_ECORRUPT,
				"qcow2: image is corrupt; cannot be opened read/write (use 'img check -r all')");
			goto fail;
		}
		s->corrupt = true;
	}
	if (s->h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
		ret = img_untrusted(img) ?
			      img_untrusted_refuse(img,
						   "names a data file '%s'",
						   s->data_file_name ?
							   s->data_file_name :
							   "") :
			      0;
		if (ret < 0)
			goto fail;
		ret = img_io_open_relative(img, s->data_file_name,
					   s->read_only ? IMG_IO_RDONLY : 0,
					   &s->data_file);
		if (ret < 0) {
			s->data_file = s->file;
			goto fail;
		}
	}
	img_set_zero_align(img, 1ull << s->subcluster_bits);
	ret = qcow2_refcount_init(s);
	if (ret < 0)
		goto fail;
	ret = qcow2_l2_init(s);
	if (ret < 0)
		goto fail;
	ret = qcow2_bitmap_open(s);
	if (ret < 0)
		goto fail;
	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		goto fail;
	s->file_end = img_align_up(file_size, s->cluster_size);
	if (s->backing_name) {
		ret = img_set_backing_name(img, s->backing_name,
					   s->backing_fmt);
		if (ret < 0)
			goto fail;
	}
	img_set_size(img, s->h.size);

	if (s->read_only)
		return 0;
	if (s->h.autoclear_features & ~QCOW2_AUTOCLEAR_KNOWN) {
		s->h.autoclear_features &= QCOW2_AUTOCLEAR_KNOWN;
		ret = qcow2_header_write(s, s->backing_name);
		if (ret < 0)
			goto fail;
		ret = img_io_flush(s->file);
		if (ret < 0)
			goto fail;
	}
	if (s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
		struct img_check res;

		if (flags & IMG_OPEN_NO_REPAIR) {
			s->dirty_set = true;
			return 0;
		}
		memset(&res, 0, sizeof(res));
		ret = qcow2_rebuild_refcounts(s, &res);
		if (ret < 0)
			goto fail;
		ret = qcow2_set_incompat(s, QCOW2_INCOMPAT_DIRTY, false);
		if (ret < 0)
			goto fail;
	}
	return 0;
fail:
	release_state(s);
	return ret;
}

static void qcow2_close(struct img *img)
{
	struct qcow2 *s = img_priv(img);

	if (!s->read_only && s->dirty_set && s->lazy_refcounts &&
	    !(img_open_flags(img) & IMG_OPEN_NO_REPAIR)) {
		/* Best effort: an image left dirty is repaired on open. */
		if (qcow2_metadata_write_back(s) == 0 &&
		    img_io_flush(s->file) == 0)
			(void)qcow2_set_incompat(s, QCOW2_INCOMPAT_DIRTY,
						 false);
	}
	release_state(s);
}

static int qcow2_flush(struct img *img)
{
	struct qcow2 *s = img_priv(img);
	int ret;

	if (s->read_only)
		return 0;
	if (s->data_file != s->file) {
		ret = img_io_flush(s->data_file);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_bitmap_flush(s);
	if (ret < 0)
		return ret;
	ret = qcow2_metadata_write_back(s);
	if (ret < 0)
		return ret;
	return img_io_flush(s->file);
}

static void add_field(struct img_info *info, const char *key,
		      enum img_value_type type, const char *str, uint64_t u64,
		      bool b)
{
	struct img_field *f;

	if (info->n_fields >= IMG_INFO_MAX_FIELDS)
		return;
	f = &info->fields[info->n_fields++];
	f->key = key;
	f->type = type;
	f->str = str;
	f->u64 = u64;
	f->b = b;
}

static int qcow2_info(struct img *img, struct img_info *info)
{
	struct qcow2 *s = img_priv(img);
	bool v3 = s->h.version >= 3;

	info->cluster_size = s->cluster_size;
	/* Just past the guest range the L1 table covers, as QEMU puts it. */
	info->vm_state_offset =
		img_align_up(img_size(img), s->cluster_size << s->l2_bits);
	info->dirty = s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY;
	info->encrypted = s->h.crypt_method != 0;
	add_field(info, "compat", IMG_VAL_STR, v3 ? "1.1" : "0.10", 0, false);
	add_field(info, "compression-type", IMG_VAL_STR,
		  s->h.compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" :
								    "zlib",
		  0, false);
	if (v3)
		add_field(info, "lazy-refcounts", IMG_VAL_BOOL, NULL, 0,
			  s->lazy_refcounts);
	add_field(info, "refcount-bits", IMG_VAL_U64, NULL, s->refcount_bits,
		  false);
	if (v3 && s->data_file_name) {
		add_field(info, "data-file", IMG_VAL_STR, s->data_file_name, 0,
			  false);
		add_field(info, "data-file-raw", IMG_VAL_BOOL, NULL, 0,
			  s->data_file_raw);
	}
	if (v3) {
		add_field(info, "corrupt", IMG_VAL_BOOL, NULL, 0,
			  s->h.incompatible_features & QCOW2_INCOMPAT_CORRUPT);
		add_field(info, "extended-l2", IMG_VAL_BOOL, NULL, 0,
			  s->extended_l2);
	}
	return qcow2_compress_info(s, info);
}

static const struct img_opt_desc qcow2_create_opts[] = {
	{ "encryption", IMG_OPT_BOOL,
	  "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
	  NULL },
	{ "encrypt.format", IMG_OPT_STR,
	  "Encrypt the image, format choices: 'aes', 'luks'", NULL },
	{ "encrypt.key-secret", IMG_OPT_STR,
	  "ID of secret providing qcow AES key or LUKS passphrase", NULL },
	{ "encrypt.cipher-alg", IMG_OPT_STR,
	  "Name of encryption cipher algorithm", NULL },
	{ "encrypt.cipher-mode", IMG_OPT_STR, "Name of encryption cipher mode",
	  NULL },
	{ "encrypt.ivgen-alg", IMG_OPT_STR, "Name of IV generator algorithm",
	  NULL },
	{ "encrypt.ivgen-hash-alg", IMG_OPT_STR,
	  "Name of IV generator hash algorithm", NULL },
	{ "encrypt.hash-alg", IMG_OPT_STR, "Name of encryption hash algorithm",
	  NULL },
	{ "encrypt.iter-time", IMG_OPT_NUM,
	  "Time to spend in PBKDF in milliseconds", NULL },
	{ "cluster_size", IMG_OPT_SIZE, "qcow2 cluster size", "65536" },
	{ "extended_l2", IMG_OPT_BOOL, "Extended L2 tables", "off" },
	{ "preallocation", IMG_OPT_STR,
	  "Preallocation mode (allowed values: off, metadata, falloc, full)",
	  NULL },
	{ "compression_type", IMG_OPT_STR,
	  "Compression method used for image cluster compression", "zlib" },
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ "compat", IMG_OPT_STR, "Compatibility level (v2 [0.10] or v3 [1.1])",
	  NULL },
	{ "backing_file", IMG_OPT_STR, "File name of a base image", NULL },
	{ "backing_fmt", IMG_OPT_STR, "Image format of the base image", NULL },
	{ "data_file", IMG_OPT_STR, "File name of an external data file",
	  NULL },
	{ "data_file_raw", IMG_OPT_BOOL,
	  "The external data file must stay valid as a raw image", NULL },
	{ "lazy_refcounts", IMG_OPT_BOOL, "Postpone refcount updates", "off" },
	{ "refcount_bits", IMG_OPT_NUM,
	  "Width of a reference count entry in bits", "16" },
	{ NULL, 0, NULL, NULL },
};

struct create_params {
	unsigned version;
	uint64_t size, cluster_size, refcount_bits;
	bool lazy, extl2, data_file_raw, encrypt;
	const char *backing_file, *backing_fmt, *data_file, *compression;
	enum img_prealloc prealloc;
};

static int parse_create_opts(const struct img_create_opts *o,
			     struct create_params *p)
{
	const char *compat = NULL, *enc_fmt = NULL;
	bool enc = false;
	int ret;

	memset(p, 0, sizeof(*p));
	p->version = 3;
	p->size = o->size;
	p->cluster_size = 65536;
	p->refcount_bits = 16;
	p->backing_file = o->backing_file;
	p->backing_fmt = o->backing_fmt;
	if ((ret = img_opt_size(o, "size", &p->size)) < 0 ||
	    (ret = img_opt_str(o, "compat", &compat)) < 0 ||
	    (ret = img_opt_str(o, "backing_file", &p->backing_file)) < 0 ||
	    (ret = img_opt_str(o, "backing_fmt", &p->backing_fmt)) < 0 ||
	    (ret = img_opt_size(o, "cluster_size", &p->cluster_size)) < 0 ||
	    (ret = img_opt_str(o, "compression_type", &p->compression)) < 0 ||
	    (ret = img_opt_str(o, "data_file", &p->data_file)) < 0 ||
	    (ret = img_opt_bool(o, "data_file_raw", &p->data_file_raw)) < 0 ||
	    (ret = img_opt_bool(o, "encryption", &enc)) < 0 ||
	    (ret = img_opt_str(o, "encrypt.format", &enc_fmt)) < 0 ||
	    (ret = img_opt_bool(o, "extended_l2", &p->extl2)) < 0 ||
	    (ret = img_opt_bool(o, "lazy_refcounts", &p->lazy)) < 0 ||
	    (ret = img_opt_prealloc(o, &p->prealloc)) < 0 ||
	    (ret = img_opt_u64(o, "refcount_bits", &p->refcount_bits)) < 0)
		return ret;
	if (compat) {
		p->version = qcow2_compat_version(compat);
		if (!p->version)
			return img_error(
				-EINVAL,
				"qcow2: invalid compatibility level '%s'",
				compat);
	}
	if (enc || enc_fmt) {
		ret = qcow2_crypt_check_opts(o, enc, enc_fmt, p->prealloc);
		if (ret < 0)
			return ret;
		p->encrypt = true;
	}
	if (!img_is_pow2(p->cluster_size) || p->cluster_size < 512 ||
	    p->cluster_size > (2u << 20))
		return img_error(
			-EINVAL,
			"qcow2: cluster size %" PRIu64
			" must be a power of two between 512 and 2048k",
			p->cluster_size);
	if (!img_is_pow2(p->refcount_bits) || p->refcount_bits > 64)
		return img_error(
			-EINVAL,
			"qcow2: refcount width %" PRIu64
			" must be a power of two and may be at most 64",
			p->refcount_bits);
	if (p->compression && strcmp(p->compression, "zlib") &&
	    strcmp(p->compression, "zstd"))
		return img_error(-EINVAL,
				 "qcow2: invalid compression type '%s'",
				 p->compression);
	if (p->version < 3) {
		if (p->refcount_bits != 16)
			return img_error(
				-EINVAL,
				"qcow2: refcount widths other than 16 bits require compat=1.1 or greater");
		if (p->lazy)
			return img_error(
				-EINVAL,
				"qcow2: lazy refcounts only supported with compat=1.1 or greater");
		if (p->extl2)
			return img_error(
				-EINVAL,
				"qcow2: extended L2 entries are only supported with compat=1.1 or greater");
		if (p->data_file)
			return img_error(
				-EINVAL,
				"qcow2: external data files are only supported with compat=1.1 or greater");
		if (p->compression && strcmp(p->compression, "zlib"))
			return img_error(
				-EINVAL,
				"qcow2: compression type '%s' requires compat=1.1 or greater",
				p->compression);
	}
	if (p->extl2 && p->cluster_size < (1u << QCOW2_EXTL2_MIN_CLUSTER_BITS))
		return img_error(
			-EINVAL,
			"qcow2: extended L2 entries are only supported with cluster sizes of at least 16384 bytes, not %" PRIu64,
			p->cluster_size);
	if (p->data_file_raw && !p->data_file)
		return img_error(-EINVAL,
				 "qcow2: data_file_raw requires data_file");
	if (p->data_file_raw && p->backing_file)
		return img_error(
			-EINVAL,
			"qcow2: backing file and data_file_raw cannot be used at the same time");
	if (p->backing_file && p->prealloc != IMG_PREALLOC_OFF && !p->extl2)
		return img_error(
			-EINVAL,
			"qcow2: backing file and preallocation can only be used at the same time if extended_l2 is on");
	if (p->backing_file && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME)
		return img_error(
			-EINVAL,
			"qcow2: backing file name is longer than %d bytes",
			QCOW2_MAX_BACKING_NAME);
	p->size = img_align_up(p->size, 512);
	if (p->size > QCOW2_MAX_VIRTUAL_SIZE)
		return img_error(-EINVAL,
				 "qcow2: virtual size %" PRIu64 " is too large",
				 p->size);
	if (p->data_file_raw && p->prealloc == IMG_PREALLOC_OFF)
		p->prealloc = IMG_PREALLOC_METADATA;
	return 0;
}

static uint64_t l1_entries_for(const struct qcow2 *s, uint64_t size)
{
	unsigned bits = s->cluster_bits + s->l2_bits;

	return (size + (1ull << bits) - 1) >> bits;
}

static int dup_str(char **dst, const char *src)
{
	if (!src) {
		*dst = NULL;
		return 0;
	}
	*dst = strdup(src);
	return *dst ? 0 : img_error(-ENOMEM, "qcow2: out of memory");
}

static int qcow2_create(const char *path, struct img_io *file,
			const struct img_create_opts *opts)
{
	struct create_params p;
	struct qcow2 *s;
	uint64_t cs;
	uint8_t *buf = NULL;
	unsigned order = 0;
	int ret;

	ret = parse_create_opts(opts, &p);
	if (ret < 0)
		return ret;
	while ((1ull << order) < p.refcount_bits)
		order++;
	cs = p.cluster_size;

	s = calloc(1, sizeof(*s));
	if (!s)
		return img_error(-ENOMEM, "qcow2: out of memory");
	s->file = file;
	s->data_file = file;
	s->h.version = p.version;
	while ((1ull << s->h.cluster_bits) < cs)
		s->h.cluster_bits++;
	s->h.l1_table_offset = 3 * cs;
	s->h.refcount_table_offset = cs;
	s->h.refcount_table_clusters = 1;
	s->h.refcount_order = order;
	s->h.header_length = p.version >= 3 ? QCOW2_HEADER_LENGTH :
					      QCOW2_V2_HEADER_SIZE;
	if (p.extl2)
		s->h.incompatible_features |= QCOW2_INCOMPAT_EXTL2;
	if (p.compression && !strcmp(p.compression, "zstd")) {
		s->h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION;
		s->h.compression_type = QCOW2_COMPRESSION_ZSTD;
	}
	if (p.data_file)
		s->h.incompatible_features |= QCOW2_INCOMPAT_DATA_FILE;
	if (p.lazy)
		s->h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
	if (p.data_file_raw)
		s->h.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
	if ((ret = dup_str(&s->backing_name, p.backing_file)) < 0 ||
	    (ret = dup_str(&s->backing_fmt, p.backing_fmt)) < 0 ||
	    (ret = dup_str(&s->data_file_name, p.data_file)) < 0)
		goto out;
	s->has_backing_fmt_ext = p.backing_fmt != NULL;
	setup_geometry(s);
	/* Lazy refcounts matter from the first open on, not here. */
	s->lazy_refcounts = false;

	if (p.data_file) {
		char *full;

		ret = img_path_relative(path, p.data_file, &full);
		if (ret < 0)
			goto out;
		ret = img_io_open(full, IMG_IO_CREATE, IMG_IO_AUTO,
				  &s->data_file);
		free(full);
		if (ret < 0) {
			s->data_file = file;
			goto out;
		}
	}

	/* An empty image: header, refcount table, one refcount block. */
	ret = qcow2_header_write(s, s->backing_name);
	if (ret < 0)
		goto out;
	buf = calloc(1, cs);
	if (!buf) {
		ret = img_error(-ENOMEM, "qcow2: out of memory");
		goto out;
	}
	img_put_be64(buf, 2 * cs);
	ret = img_io_pwrite(file, buf, cs, cs);
	if (ret < 0)
		goto out;
	memset(buf, 0, cs);
	ret = img_io_pwrite(file, buf, cs, 2 * cs);
	if (ret < 0)
		goto out;
	ret = qcow2_refcount_init(s);
	if (ret < 0)
		goto out;
	ret = qcow2_refcount_update(s, 0, 3 * cs, 1);
	if (ret < 0)
		goto out;
	s->free_cluster_hint = 3;
	ret = qcow2_l2_init(s);
	if (ret < 0)
		goto out;

	/* Grow it to the size, as QEMU does: the L1 table lands at
	 * cluster 3. */
	ret = qcow2_grow_l1(s, l1_entries_for(s, p.size));
	if (ret < 0)
		goto out;
	if (p.encrypt) {
		/* As QEMU: the LUKS area follows the L1 table. */
		ret = qcow2_crypt_create(s, opts);
		if (ret < 0)
			goto out;
	}
	s->h.size = p.size;
	if (p.prealloc != IMG_PREALLOC_OFF && p.size) {
		ret = qcow2_preallocate(s, 0, p.size, p.prealloc);
		if (ret < 0)
			goto out;
	}
	if (p.data_file_raw) {
		uint64_t dsize;

		ret = img_io_size(s->data_file, &dsize);
		if (ret == 0 && dsize < p.size)
			ret = img_io_truncate(s->data_file, p.size);
		if (ret < 0)
			goto out;
	}
	ret = qcow2_metadata_write_back(s);
	if (ret < 0)
		goto out;
	ret = qcow2_header_write(s, s->backing_name);
	if (ret < 0)
		goto out;
	if (s->data_file != file) {
		ret = img_io_flush(s->data_file);
		if (ret < 0)
			goto out;
	}
	ret = img_io_flush(file);
out:
	free(buf);
	release_state(s);
	free(s);
	return ret;
}

static int write_size(struct qcow2 *s, uint64_t size)
{
	uint64_t old = s->h.size;
	uint8_t field[8];
	int ret;

	img_put_be64(field, size);
	ret = img_io_pwrite(s->file, field, 8, 24);
	if (ret < 0)
		return ret;
	ret = img_io_flush(s->file);
	if (ret < 0)
		return ret;
	s->h.size = size;
	return qcow2_bitmap_resize_end(s, old);
}

static int qcow2_resize(struct img *img, uint64_t size, unsigned flags,
			enum img_prealloc prealloc)
{
	struct qcow2 *s = img_priv(img);
	uint64_t old = s->h.size;
	int ret;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	if (size % 512)
		return img_error(-EINVAL,
				 "qcow2: the new size %" PRIu64
				 " must be a multiple of 512",
				 size);
	if (size > QCOW2_MAX_VIRTUAL_SIZE)
		return img_error(-EINVAL,
				 "qcow2: virtual size %" PRIu64 " is too large",
				 size);
	if (s->h.nb_snapshots && s->h.version < 3)
		return img_error(
			-ENOTSUP,
			"qcow2: Can't resize a v2 image which has snapshots");
	if (size == old)
		return 0;
	ret = qcow2_bitmap_resize_begin(s);
	if (ret < 0)
		return ret;
	if (size < old) {
		uint64_t end, file_size;

		if (!(flags & IMG_RESIZE_SHRINK))
			return img_error(
				-EINVAL,
				"qcow2: use the --shrink option to perform a shrink operation");
		if (prealloc != IMG_PREALLOC_OFF)
			return img_error(
				-ENOTSUP,
				"qcow2: preallocation can't be used for shrinking an image");
		ret = qcow2_shrink_clusters(s, img_align_up(size,
							    s->cluster_size));
		if (ret < 0)
			return ret;
		ret = img_io_flush(s->file);
		if (ret < 0)
			return ret;
		ret = write_size(s, size);
		if (ret < 0)
			return ret;
		img_set_size(img, size);
		if (s->data_file_raw) {
			ret = img_io_truncate(s->data_file, size);
			if (ret < 0)
				return ret;
		}
		ret = qcow2_refcount_end(s, &end);
		if (ret < 0)
			return ret;
		ret = img_io_size(s->file, &file_size);
		if (ret < 0)
			return ret;
		end <<= s->cluster_bits;
		if (end < file_size)
			ret = img_io_truncate(s->file, end);
		return ret;
	}

	ret = qcow2_grow_l1(s, l1_entries_for(s, size));
	if (ret < 0)
		return ret;
	if (prealloc != IMG_PREALLOC_OFF) {
		ret = qcow2_preallocate(s, old, size - old, prealloc);
		if (ret < 0)
			return ret;
	}
	if (s->data_file_raw) {
		ret = img_io_truncate(s->data_file, size);
		if (ret < 0)
			return ret;
	}
	ret = qcow2_metadata_write_back(s);
	if (ret < 0)
		return ret;
	ret = img_io_flush(s->file);
	if (ret < 0)
		return ret;
	ret = write_size(s, size);
	if (ret < 0)
		return ret;
	img_set_size(img, size);
	return 0;
}

int qcow2_set_backing(struct img *img, const char *name, const char *fmt)
{
	struct qcow2 *s = img_priv(img);
	char *new_name = NULL, *new_fmt = NULL;
	char *old_name = s->backing_name, *old_fmt = s->backing_fmt;
	bool old_ext = s->has_backing_fmt_ext;
	int ret;

	if (name && s->data_file_raw)
		return img_error(
			-EINVAL,
			"qcow2: an image with data_file_raw cannot have a backing file");
	if (name && strlen(name) > QCOW2_MAX_BACKING_NAME)
		return img_error(
			-EINVAL,
			"qcow2: backing file name is longer than %d bytes",
			QCOW2_MAX_BACKING_NAME);
	if ((ret = dup_str(&new_name, name)) < 0 ||
	    (ret = dup_str(&new_fmt, name ? fmt : NULL)) < 0) {
		free(new_name);
		return ret;
	}
	s->backing_name = new_name;
	s->backing_fmt = new_fmt;
	s->has_backing_fmt_ext = new_fmt != NULL;
	ret = qcow2_header_write(s, new_name);
	if (ret == 0)
		ret = img_io_flush(s->file);
	if (ret < 0) {
		s->backing_name = old_name;
		s->backing_fmt = old_fmt;
		s->has_backing_fmt_ext = old_ext;
		free(new_name);
		free(new_fmt);
		return ret;
	}
	free(old_name);
	free(old_fmt);
	return 0;
}

static const struct img_create_ops qcow2_create_ops = {
	.create = qcow2_create,
	.opts = qcow2_create_opts,
	.measure = qcow2_measure,
};

static const struct img_snapshot_ops qcow2_snapshot_ops = {
	.list = qcow2_snapshot_list,
	.create = qcow2_snapshot_create,
	.apply = qcow2_snapshot_apply,
	.delete = qcow2_snapshot_delete,
	.load = qcow2_snapshot_load,
};

static const struct img_amend_ops qcow2_amend_ops = {
	.amend = qcow2_amend,
	.resize = qcow2_resize,
	.opts = qcow2_amend_opts,
	.set_backing = qcow2_set_backing,
	.make_empty = qcow2_make_empty,
};

static const struct img_compress_ops qcow2_compress_ops = {
	.params = qcow2_compress_params,
	.write = qcow2_write_compressed,
};

static const struct img_crypt_ops qcow2_crypt_ops = {
	.info = qcow2_crypt_info,
};

const struct img_driver qcow2_driver = {
	.name = "qcow2",
	.priv_size = sizeof(struct qcow2),
	.thread_safe = false,
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.commit = qcow2_commit,
	.zero = qcow2_zero,
	.flush = qcow2_flush,
	.map = qcow2_map,
	.create = &qcow2_create_ops,
	.info = qcow2_info,
	.check = qcow2_check,
	.snapshot = &qcow2_snapshot_ops,
	.amend = &qcow2_amend_ops,
	.compress = &qcow2_compress_ops,
	.bitmap = &qcow2_bitmap_ops,
	.crypt = &qcow2_crypt_ops,
};
