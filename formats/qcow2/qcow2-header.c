/* SPDX-License-Identifier: MIT */
/*
 * qcow2 header: decoding and validating the first cluster of an image (the
 * fixed header fields, the header extensions and the backing file name) and
 * encoding it again in the layout QEMU 7.2 writes (extensions in QEMU's order,
 * unknown extensions and unknown additional header fields preserved). Every
 * byte read here is untrusted: each field is range-checked before use.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Offsets of the on-disk header fields (spec: "Byte x - y"). */
enum {
	HDR_MAGIC = 0,
	HDR_VERSION = 4,
	HDR_BACKING_FILE_OFFSET = 8,
	HDR_BACKING_FILE_SIZE = 16,
	HDR_CLUSTER_BITS = 20,
	HDR_SIZE = 24,
	HDR_CRYPT_METHOD = 32,
	HDR_L1_SIZE = 36,
	HDR_L1_TABLE_OFFSET = 40,
	HDR_REFCOUNT_TABLE_OFFSET = 48,
	HDR_REFCOUNT_TABLE_CLUSTERS = 56,
	HDR_NB_SNAPSHOTS = 60,
	HDR_SNAPSHOTS_OFFSET = 64,
	HDR_INCOMPATIBLE_FEATURES = 72,
	HDR_COMPATIBLE_FEATURES = 80,
	HDR_AUTOCLEAR_FEATURES = 88,
	HDR_REFCOUNT_ORDER = 96,
	HDR_HEADER_LENGTH = 100,
	HDR_COMPRESSION_TYPE = 104,
};

#define FEATURE_ENTRY_SIZE 48
#define MAX_SNAPSHOTS 65536
#define MAX_BACKING_FMT 15 /* QEMU keeps it in a 16-byte buffer */

static const struct {
	uint8_t type, bit;
	const char *name;
} qemu_features[] = {
	{ 0, 0, "dirty bit" },
	{ 0, 1, "corrupt bit" },
	{ 0, 2, "external data file" },
	{ 0, 3, "compression type" },
	{ 0, 4, "extended L2 entries" },
	{ 1, 0, "lazy refcounts" },
	{ 2, 0, "bitmaps" },
	{ 2, 1, "raw external data" },
};

const char *qcow2_feature_name(const struct qcow2 *s, unsigned type,
			       unsigned bit, char *buf, size_t buf_size)
{
	for (size_t i = 0; i < s->n_feature_names; i++) {
		const struct qcow2_feature_name *f = &s->feature_names[i];

		if (f->type == type && f->bit == bit && f->name[0])
			return f->name;
	}
	for (size_t i = 0; i < IMG_ARRAY_SIZE(qemu_features); i++)
		if (qemu_features[i].type == type &&
		    qemu_features[i].bit == bit)
			return qemu_features[i].name;
	snprintf(buf, buf_size, "bit %u", bit);
	return buf;
}

unsigned qcow2_compat_version(const char *compat)
{
	if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
		return 2;
	if (!strcmp(compat, "1.1") || !strcmp(compat, "v3"))
		return 3;
	return 0;
}

static char *dup_bytes(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (!s)
		return NULL;
	memcpy(s, p, len);
	s[len] = '\0';
	return s;
}

static int add_unknown_ext(struct qcow2 *s, uint32_t type, const uint8_t *p,
			   uint32_t len)
{
	struct qcow2_ext *n;

	n = realloc(s->unknown_exts, (s->n_unknown_exts + 1) * sizeof(*n));
	if (!n)
		return img_error(-ENOMEM, "qcow2: out of memory");
	s->unknown_exts = n;
	n = &s->unknown_exts[s->n_unknown_exts];
	n->type = type;
	n->len = len;
	n->data = malloc(len ? len : 1);
	if (!n->data)
		return img_error(-ENOMEM, "qcow2: out of memory");
	memcpy(n->data, p, len);
	s->n_unknown_exts++;
	return 0;
}

static int read_extensions(struct qcow2 *s, const uint8_t *buf, uint64_t start,
			   uint64_t end)
{
	uint64_t off = start;
	bool seen_bfmt = false, seen_ft = false, seen_df = false;
	bool seen_crypto = false, seen_bitmaps = false;

	while (off < end) {
		uint32_t type, len;
		const uint8_t *p;

		if (end - off < 8)
			return img_error(-IMG_ECORRUPT,
					 "qcow2: header extension at %#" PRIx64
					 " is truncated",
					 off);
		type = img_be32(buf + off);
		len = img_be32(buf + off + 4);
		if (type == QCOW2_EXT_END)
			return 0;
		if (len > end - off - 8)
			return img_error(
				-IMG_ECORRUPT,
				"qcow2: header extension %#x at %#" PRIx64
				" has length %u past the header area",
				type, off, len);
		p = buf + off + 8;
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (seen_bfmt)
				goto dup;
			seen_bfmt = true;
			if (len > MAX_BACKING_FMT)
				return img_error(
					-IMG_ECORRUPT,
					"qcow2: backing format extension length %u is too large",
					len);
			s->backing_fmt = dup_bytes(p, len);
			if (!s->backing_fmt)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			s->has_backing_fmt_ext = true;
			break;
		case QCOW2_EXT_FEATURE_TABLE: {
			size_t n = len / FEATURE_ENTRY_SIZE;

			if (seen_ft)
				goto dup;
			seen_ft = true;
			s->feature_names =
				calloc(n ? n : 1, sizeof(*s->feature_names));
			if (!s->feature_names)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			for (size_t i = 0; i < n; i++) {
				const uint8_t *e = p + i * FEATURE_ENTRY_SIZE;
				struct qcow2_feature_name *f =
					&s->feature_names[i];

				f->type = e[0];
				f->bit = e[1];
				memcpy(f->name, e + 2, 46);
				f->name[46] = '\0';
			}
			s->n_feature_names = n;
			break;
		}
		case QCOW2_EXT_DATA_FILE:
			if (seen_df)
				goto dup;
			seen_df = true;
			if (len == 0 || len > QCOW2_MAX_BACKING_NAME ||
			    memchr(p, 0, len))
				return img_error(
					-IMG_ECORRUPT,
					"qcow2: invalid data file name extension (length %u)",
					len);
			s->data_file_name = dup_bytes(p, len);
			if (!s->data_file_name)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			break;
		case QCOW2_EXT_CRYPTO:
			if (seen_crypto)
				goto dup;
			seen_crypto = true;
			s->crypto_ext = malloc(len ? len : 1);
			if (!s->crypto_ext)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			memcpy(s->crypto_ext, p, len);
			s->crypto_ext_len = len;
			break;
		case QCOW2_EXT_BITMAPS:
			if (seen_bitmaps)
				goto dup;
			seen_bitmaps = true;
			s->bitmaps_ext = malloc(len ? len : 1);
			if (!s->bitmaps_ext)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
			memcpy(s->bitmaps_ext, p, len);
			s->bitmaps_ext_len = len;
			break;
		default: {
			int ret = add_unknown_ext(s, type, p, len);

			if (ret < 0)
				return ret;
			break;
		}
		}
		off += 8 + img_align_up(len, 8);
	}
	return 0;
dup:
	return img_error(-IMG_ECORRUPT,
			 "qcow2: duplicate header extension %#x at %#" PRIx64,
			 img_be32(buf + off), off);
}

static int check_table(uint64_t cluster_size, uint64_t off, uint64_t len,
		       const char *what)
{
	if (off & (cluster_size - 1))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %s offset %#" PRIx64
				 " is not cluster aligned",
				 what, off);
	if (len && off == 0)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %s offset 0 overlaps the header",
				 what);
	if (off > QCOW2_L2E_OFFSET_MASK || len > QCOW2_L2E_OFFSET_MASK - off)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %s at %#" PRIx64 " of %" PRIu64
				 " bytes is out of range",
				 what, off, len);
	return 0;
}

static int check_incompat(struct qcow2 *s)
{
	uint64_t unknown = s->h.incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
	char tmp[32];

	if (!unknown)
		return 0;
	for (unsigned bit = 0; bit < 64; bit++) {
		if (!(unknown & (1ull << bit)))
			continue;
		const char *name =
			qcow2_feature_name(s, 0, bit, tmp, sizeof(tmp));
		return img_error(
			-ENOTSUP,
			"qcow2: unsupported incompatible feature '%s' (bit %u)",
			name, bit);
	}
	return 0;
}

int qcow2_header_read(struct qcow2 *s)
{
	struct qcow2_header *h = &s->h;
	uint8_t first[QCOW2_V3_HEADER_SIZE + 8];
	uint8_t *buf = NULL;
	uint64_t cs, l2_cover, l1_needed, ext_end;
	int ret;

	ret = img_io_pread(s->file, first, sizeof(first), 0);
	if (ret < 0)
		return ret;
	if (img_be32(first + HDR_MAGIC) != QCOW2_MAGIC)
		return img_error(-IMG_ECORRUPT, "qcow2: bad magic %#x",
				 img_be32(first + HDR_MAGIC));
	h->version = img_be32(first + HDR_VERSION);
	if (h->version != 2 && h->version != 3)
		return img_error(-ENOTSUP, "qcow2: unsupported version %u",
				 h->version);
	h->cluster_bits = img_be32(first + HDR_CLUSTER_BITS);
	if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: invalid cluster_bits %u (minimum %u)",
				 h->cluster_bits, QCOW2_MIN_CLUSTER_BITS);
	if (h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return img_error(
			-ENOTSUP,
			"qcow2: unsupported cluster_bits %u (maximum %u)",
			h->cluster_bits, QCOW2_MAX_CLUSTER_BITS);
	cs = 1ull << h->cluster_bits;
	buf = malloc(cs);
	if (!buf)
		return img_error(-ENOMEM, "qcow2: out of memory");
	ret = img_io_pread(s->file, buf, cs, 0);
	if (ret < 0)
		goto out;

	h->backing_file_offset = img_be64(buf + HDR_BACKING_FILE_OFFSET);
	h->backing_file_size = img_be32(buf + HDR_BACKING_FILE_SIZE);
	h->size = img_be64(buf + HDR_SIZE);
	h->crypt_method = img_be32(buf + HDR_CRYPT_METHOD);
	h->l1_size = img_be32(buf + HDR_L1_SIZE);
	h->l1_table_offset = img_be64(buf + HDR_L1_TABLE_OFFSET);
	h->refcount_table_offset = img_be64(buf + HDR_REFCOUNT_TABLE_OFFSET);
	h->refcount_table_clusters =
		img_be32(buf + HDR_REFCOUNT_TABLE_CLUSTERS);
	h->nb_snapshots = img_be32(buf + HDR_NB_SNAPSHOTS);
	h->snapshots_offset = img_be64(buf + HDR_SNAPSHOTS_OFFSET);
	if (h->version == 2) {
		h->incompatible_features = 0;
		h->compatible_features = 0;
		h->autoclear_features = 0;
		h->refcount_order = 4;
		h->header_length = QCOW2_V2_HEADER_SIZE;
		h->compression_type = 0;
	} else {
		h->incompatible_features =
			img_be64(buf + HDR_INCOMPATIBLE_FEATURES);
		h->compatible_features =
			img_be64(buf + HDR_COMPATIBLE_FEATURES);
		h->autoclear_features = img_be64(buf + HDR_AUTOCLEAR_FEATURES);
		h->refcount_order = img_be32(buf + HDR_REFCOUNT_ORDER);
		h->header_length = img_be32(buf + HDR_HEADER_LENGTH);
		if (h->header_length < QCOW2_V3_HEADER_SIZE ||
		    h->header_length % 8 || h->header_length > cs) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: invalid header_length %u",
					h->header_length);
			goto out;
		}
		h->compression_type = h->header_length > HDR_COMPRESSION_TYPE ?
					      buf[HDR_COMPRESSION_TYPE] :
					      0;
		if (h->header_length > QCOW2_HEADER_LENGTH) {
			s->header_tail_len =
				h->header_length - QCOW2_HEADER_LENGTH;
			s->header_tail = malloc(s->header_tail_len);
			if (!s->header_tail) {
				ret = img_error(-ENOMEM,
						"qcow2: out of memory");
				goto out;
			}
			memcpy(s->header_tail, buf + QCOW2_HEADER_LENGTH,
			       s->header_tail_len);
		}
	}

	if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER) {
		ret = img_error(-IMG_ECORRUPT,
				"qcow2: invalid refcount_order %u (maximum %u)",
				h->refcount_order, QCOW2_MAX_REFCOUNT_ORDER);
		goto out;
	}
	if (h->size > QCOW2_MAX_VIRTUAL_SIZE) {
		ret = img_error(-ENOTSUP,
				"qcow2: virtual size %" PRIu64 " is too large",
				h->size);
		goto out;
	}
	if (h->crypt_method > QCOW2_CRYPT_LUKS) {
		ret = img_error(-IMG_ECORRUPT, "qcow2: invalid crypt_method %u",
				h->crypt_method);
		goto out;
	}

	/* Extensions first: the feature-name table names unknown bits. */
	ext_end = cs;
	if (h->backing_file_offset) {
		if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
		    h->backing_file_size == 0) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: invalid backing_file_size %u",
					h->backing_file_size);
			goto out;
		}
		if (h->backing_file_offset < h->header_length ||
		    h->backing_file_offset > cs ||
		    h->backing_file_size > cs - h->backing_file_offset) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: backing_file_offset %#" PRIx64
					" is outside the first cluster",
					h->backing_file_offset);
			goto out;
		}
		ext_end = h->backing_file_offset;
	}
	ret = read_extensions(s, buf, h->header_length, ext_end);
	if (ret < 0)
		goto out;
	ret = check_incompat(s);
	if (ret < 0)
		goto out;
	if (h->backing_file_offset) {
		s->backing_name = dup_bytes(buf + h->backing_file_offset,
					    h->backing_file_size);
		if (!s->backing_name) {
			ret = img_error(-ENOMEM, "qcow2: out of memory");
			goto out;
		}
	}

	if (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
		if (h->header_length <= HDR_COMPRESSION_TYPE ||
		    h->compression_type == QCOW2_COMPRESSION_ZLIB) {
			ret = img_error(
				-IMG_ECORRUPT,
				"qcow2: compression type bit set but compression_type is %u",
				h->compression_type);
			goto out;
		}
	} else if (h->compression_type != QCOW2_COMPRESSION_ZLIB) {
		ret = img_error(
			-IMG_ECORRUPT,
			"qcow2: compression_type %u without the compression type bit",
			h->compression_type);
		goto out;
	}
	if (h->compression_type > QCOW2_COMPRESSION_ZSTD) {
		ret = img_error(-ENOTSUP,
				"qcow2: unsupported compression_type %u",
				h->compression_type);
		goto out;
	}
	if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) &&
	    h->cluster_bits < QCOW2_EXTL2_MIN_CLUSTER_BITS) {
		ret = img_error(
			-IMG_ECORRUPT,
			"qcow2: extended L2 entries need cluster_bits >= %u, not %u",
			QCOW2_EXTL2_MIN_CLUSTER_BITS, h->cluster_bits);
		goto out;
	}
	if ((h->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) &&
	    !(h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE)) {
		ret = img_error(
			-IMG_ECORRUPT,
			"qcow2: data-file-raw is set without a data file");
		goto out;
	}
	if ((h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) &&
	    !s->data_file_name) {
		ret = img_error(
			-IMG_ECORRUPT,
			"qcow2: external data file bit set without a data file name");
		goto out;
	}

	/* Tables. */
	ret = check_table(cs, h->refcount_table_offset,
			  (uint64_t)h->refcount_table_clusters
				  << h->cluster_bits,
			  "refcount table");
	if (ret < 0)
		goto out;
	if (h->refcount_table_clusters == 0) {
		ret = img_error(-IMG_ECORRUPT,
				"qcow2: refcount_table_clusters is 0");
		goto out;
	}
	if ((uint64_t)h->refcount_table_clusters << h->cluster_bits >
	    QCOW2_MAX_REFTABLE_BYTES) {
		ret = img_error(
			-ENOTSUP,
			"qcow2: refcount table of %u clusters is too large",
			h->refcount_table_clusters);
		goto out;
	}
	ret = img_metadata_check(
		s->img, (uint64_t)h->refcount_table_clusters << h->cluster_bits,
		"a refcount table");
	if (ret < 0)
		goto out;
	{
		unsigned entry =
			(h->incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 16 :
									    8;

		l2_cover = (cs / entry) << h->cluster_bits;
	}
	l1_needed = (h->size + l2_cover - 1) / l2_cover;
	if (h->l1_size < l1_needed) {
		ret = img_error(
			-IMG_ECORRUPT,
			"qcow2: l1_size %u is too small for virtual size %" PRIu64,
			h->l1_size, h->size);
		goto out;
	}
	if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
		ret = img_error(-ENOTSUP,
				"qcow2: L1 table of %u entries is too large",
				h->l1_size);
		goto out;
	}
	ret = img_metadata_check(s->img, (uint64_t)h->l1_size * 8,
				 "an L1 table");
	if (ret < 0)
		goto out;
	ret = check_table(cs, h->l1_table_offset, (uint64_t)h->l1_size * 8,
			  "L1 table");
	if (ret < 0)
		goto out;
	{
		uint64_t l1_end = h->l1_table_offset + (uint64_t)h->l1_size * 8;
		uint64_t rt_end = h->refcount_table_offset +
				  ((uint64_t)h->refcount_table_clusters
				   << h->cluster_bits);

		if (h->l1_size && h->l1_table_offset < rt_end &&
		    h->refcount_table_offset < l1_end) {
			ret = img_error(
				-IMG_ECORRUPT,
				"qcow2: L1 table at %#" PRIx64
				" overlaps the refcount table at %#" PRIx64,
				h->l1_table_offset, h->refcount_table_offset);
			goto out;
		}
	}
	if (h->nb_snapshots > MAX_SNAPSHOTS) {
		ret = img_error(-IMG_ECORRUPT,
				"qcow2: nb_snapshots %u is too large",
				h->nb_snapshots);
		goto out;
	}
	if (h->nb_snapshots) {
		ret = check_table(cs, h->snapshots_offset, 1, "snapshot table");
		if (ret < 0)
			goto out;
	}
	ret = 0;
out:
	free(buf);
	return ret;
}

static uint8_t *put_ext(uint8_t *p, uint32_t type, const void *data,
			uint32_t len)
{
	img_put_be32(p, type);
	img_put_be32(p + 4, len);
	if (len && data)
		memcpy(p + 8, data, len);
	return p + 8 + img_align_up(len, 8);
}

static uint64_t ext_size(uint32_t len)
{
	return 8 + img_align_up(len, 8);
}

int qcow2_header_write(struct qcow2 *s, const char *backing_name)
{
	const struct qcow2_header *h = &s->h;
	uint64_t cs = s->cluster_size, need;
	size_t bn_len = backing_name ? strlen(backing_name) : 0;
	bool v3 = h->version >= 3;
	uint32_t hlen = v3 ? QCOW2_HEADER_LENGTH + s->header_tail_len :
			     QCOW2_V2_HEADER_SIZE;
	uint8_t *buf, *p;
	int ret;

	if (bn_len > QCOW2_MAX_BACKING_NAME)
		return img_error(
			-EINVAL,
			"qcow2: backing file name of %zu bytes is too long",
			bn_len);
	need = hlen + 8;
	if (s->backing_fmt && s->has_backing_fmt_ext)
		need += ext_size((uint32_t)strlen(s->backing_fmt));
	if (s->data_file_name)
		need += ext_size((uint32_t)strlen(s->data_file_name));
	if (s->crypto_ext)
		need += ext_size(s->crypto_ext_len);
	if (v3 && cs > 4096)
		need += ext_size(IMG_ARRAY_SIZE(qemu_features) *
				 FEATURE_ENTRY_SIZE);
	if (s->bitmaps_ext)
		need += ext_size(s->bitmaps_ext_len);
	for (size_t i = 0; i < s->n_unknown_exts; i++)
		need += ext_size(s->unknown_exts[i].len);
	need += bn_len;
	if (need > cs)
		return img_error(-EINVAL,
				 "qcow2: header and extensions need %" PRIu64
				 " bytes, more than one cluster (%" PRIu64 ")",
				 need, cs);

	buf = calloc(1, cs);
	if (!buf)
		return img_error(-ENOMEM, "qcow2: out of memory");
	img_put_be32(buf + HDR_MAGIC, QCOW2_MAGIC);
	img_put_be32(buf + HDR_VERSION, h->version);
	img_put_be32(buf + HDR_CLUSTER_BITS, h->cluster_bits);
	img_put_be64(buf + HDR_SIZE, h->size);
	img_put_be32(buf + HDR_CRYPT_METHOD, h->crypt_method);
	img_put_be32(buf + HDR_L1_SIZE, h->l1_size);
	img_put_be64(buf + HDR_L1_TABLE_OFFSET, h->l1_table_offset);
	img_put_be64(buf + HDR_REFCOUNT_TABLE_OFFSET, h->refcount_table_offset);
	img_put_be32(buf + HDR_REFCOUNT_TABLE_CLUSTERS,
		     h->refcount_table_clusters);
	img_put_be32(buf + HDR_NB_SNAPSHOTS, h->nb_snapshots);
	img_put_be64(buf + HDR_SNAPSHOTS_OFFSET, h->snapshots_offset);
	if (v3) {
		img_put_be64(buf + HDR_INCOMPATIBLE_FEATURES,
			     h->incompatible_features);
		img_put_be64(buf + HDR_COMPATIBLE_FEATURES,
			     h->compatible_features);
		img_put_be64(buf + HDR_AUTOCLEAR_FEATURES,
			     h->autoclear_features);
		img_put_be32(buf + HDR_REFCOUNT_ORDER, h->refcount_order);
		img_put_be32(buf + HDR_HEADER_LENGTH, hlen);
		buf[HDR_COMPRESSION_TYPE] = h->compression_type;
		if (s->header_tail_len)
			memcpy(buf + QCOW2_HEADER_LENGTH, s->header_tail,
			       s->header_tail_len);
	}

	/* QEMU 7.2's order: backing format, data file, crypto, feature
	 * table, bitmaps, unknown extensions, end, backing name. */
	p = buf + hlen;
	if (s->backing_fmt && s->has_backing_fmt_ext)
		p = put_ext(p, QCOW2_EXT_BACKING_FORMAT, s->backing_fmt,
			    (uint32_t)strlen(s->backing_fmt));
	if (s->data_file_name)
		p = put_ext(p, QCOW2_EXT_DATA_FILE, s->data_file_name,
			    (uint32_t)strlen(s->data_file_name));
	if (s->crypto_ext)
		p = put_ext(p, QCOW2_EXT_CRYPTO, s->crypto_ext,
			    s->crypto_ext_len);
	/* QEMU leaves the table out of small clusters (room for names). */
	if (v3 && cs > 4096) {
		uint8_t *ft = p + 8;

		p = put_ext(p, QCOW2_EXT_FEATURE_TABLE, NULL,
			    IMG_ARRAY_SIZE(qemu_features) * FEATURE_ENTRY_SIZE);
		for (size_t i = 0; i < IMG_ARRAY_SIZE(qemu_features); i++) {
			uint8_t *e = ft + i * FEATURE_ENTRY_SIZE;

			e[0] = qemu_features[i].type;
			e[1] = qemu_features[i].bit;
			memcpy(e + 2, qemu_features[i].name,
			       strlen(qemu_features[i].name));
		}
	}
	if (s->bitmaps_ext)
		p = put_ext(p, QCOW2_EXT_BITMAPS, s->bitmaps_ext,
			    s->bitmaps_ext_len);
	for (size_t i = 0; i < s->n_unknown_exts; i++)
		p = put_ext(p, s->unknown_exts[i].type, s->unknown_exts[i].data,
			    s->unknown_exts[i].len);
	p += 8; /* end of extensions: already zero */
	if (bn_len) {
		memcpy(p, backing_name, bn_len);
		img_put_be64(buf + HDR_BACKING_FILE_OFFSET,
			     (uint64_t)(p - buf));
		img_put_be32(buf + HDR_BACKING_FILE_SIZE, (uint32_t)bn_len);
	}
	ret = img_io_pwrite(s->file, buf, cs, 0);
	free(buf);
	return ret;
}

int qcow2_set_incompat(struct qcow2 *s, uint64_t bits, bool on)
{
	uint64_t v = on ? s->h.incompatible_features | bits :
			  s->h.incompatible_features & ~bits;
	uint8_t field[8];
	int ret;

	if (s->h.version < 3)
		return img_error(
			-ENOTSUP,
			"qcow2: version 2 images have no incompatible feature bits");
	if (v == s->h.incompatible_features)
		return 0;
	if (!on) {
		/* Whatever the bit protected must be stable first. */
		ret = img_io_flush(s->file);
		if (ret < 0)
			return ret;
	}
	img_put_be64(field, v);
	ret = img_io_pwrite(s->file, field, sizeof(field),
			    HDR_INCOMPATIBLE_FEATURES);
	if (ret < 0)
		return ret;
	ret = img_io_flush(s->file);
	if (ret < 0)
		return ret;
	s->h.incompatible_features = v;
	return 0;
}

int qcow2_signal_corruption(struct qcow2 *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!s->read_only && s->h.version >= 3 && !s->corrupt) {
		s->corrupt = true;
		(void)qcow2_set_incompat(s, QCOW2_INCOMPAT_CORRUPT, true);
		return img_error(
			-IMG_ECORRUPT,
			"%s; image marked as corrupt, further writes are refused",
			msg);
	}
	return img_error(-IMG_ECORRUPT, "%s", msg);
}
