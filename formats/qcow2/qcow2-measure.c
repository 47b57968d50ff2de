/* SPDX-License-Identifier: MIT */
/*
 * qcow2 measure: the host file size a new qcow2 image needs, as `qemu-img
 * measure` computes it. "fully-allocated" is the header cluster, every L2
 * table and the L1 table for the virtual size, every data cluster, and the
 * refcount table and blocks covering all of that (a fixed point, since the
 * refcount structures count themselves). "required" is the same metadata plus
 * only the data clusters the source allocates (all of them with a backing
 * file or with falloc/full preallocation). The arithmetic is QEMU 7.2's
 * (qcow2_calc_prealloc_size and qcow2_refcount_metadata_size), so the numbers
 * match qemu-img's to the byte; it overestimates, as QEMU's does.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static uint64_t div_round_up(uint64_t a, uint64_t b)
{
	return a / b + (a % b != 0);
}

/* Bytes of refcount table and blocks needed to count clusters clusters plus
 * the refcount structures themselves. */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cluster_size,
				       unsigned refcount_order)
{
	uint64_t per_table_cluster = cluster_size / 8;
	uint64_t per_block = cluster_size * 8 >> refcount_order;
	uint64_t table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = div_round_up(clusters + table + blocks, per_block);
		table = div_round_up(blocks, per_table_cluster);
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cluster_size;
}

static uint64_t prealloc_size(uint64_t total_size, uint64_t cluster_size,
			      unsigned refcount_order, unsigned l2e_size)
{
	uint64_t aligned = img_align_up(total_size, cluster_size);
	uint64_t meta = cluster_size; /* header */
	uint64_t nl2e, nl1e;

	nl2e = img_align_up(aligned / cluster_size, cluster_size / l2e_size);
	meta += nl2e * l2e_size;
	nl1e = nl2e * l2e_size / cluster_size;
	nl1e = img_align_up(nl1e, cluster_size / 8);
	meta += nl1e * 8;
	meta += refcount_metadata_size((meta + aligned) / cluster_size,
				       cluster_size, refcount_order);
	return meta + aligned;
}

/* The options qemu-img measure reads for qcow2, validated as create does. */
struct measure_opts {
	uint64_t cluster_size;
	unsigned refcount_order;
	unsigned l2e_size;
	enum img_prealloc prealloc;
	bool has_backing;
	unsigned version;
};

static int parse_opts(const struct img_create_opts *opts,
		      struct measure_opts *m)
{
	const char *compat = NULL, *str = NULL;
	uint64_t refcount_bits = 16;
	bool extl2 = false;
	unsigned version = 3;
	int ret;

	memset(m, 0, sizeof(*m));
	ret = img_opt_bool(opts, "extended_l2", &extl2);
	if (ret < 0)
		return ret;
	m->l2e_size = extl2 ? 16 : 8;
	m->cluster_size = 65536;
	ret = img_opt_size(opts, "cluster_size", &m->cluster_size);
	if (ret < 0)
		return ret;
	if (!img_is_pow2(m->cluster_size) ||
	    m->cluster_size < (1u << QCOW2_MIN_CLUSTER_BITS) ||
	    m->cluster_size > (1u << QCOW2_MAX_CLUSTER_BITS))
		return img_error(-EINVAL,
				 "qcow2: cluster size must be a power of two "
				 "between 512 and 2048k, not %" PRIu64,
				 m->cluster_size);
	if (extl2 && m->cluster_size < (1u << QCOW2_EXTL2_MIN_CLUSTER_BITS))
		return img_error(
			-EINVAL,
			"qcow2: extended l2 entries are only supported "
			"with cluster sizes of at least 16384 bytes, "
			"not %" PRIu64,
			m->cluster_size);
	ret = img_opt_str(opts, "compat", &compat);
	if (ret < 0)
		return ret;
	if (compat) {
		version = qcow2_compat_version(compat);
		if (!version)
			return img_error(-EINVAL,
					 "qcow2: invalid compatibility level "
					 "'%s'",
					 compat);
	}
	ret = img_opt_u64(opts, "refcount_bits", &refcount_bits);
	if (ret < 0)
		return ret;
	if (!img_is_pow2(refcount_bits) || refcount_bits > 64)
		return img_error(-EINVAL,
				 "qcow2: refcount width must be a power of two "
				 "and may not exceed 64 bits, not %" PRIu64,
				 refcount_bits);
	if (version < 3 && refcount_bits != 16)
		return img_error(-EINVAL,
				 "qcow2: refcount width %" PRIu64
				 " requires compat=1.1 or above",
				 refcount_bits);
	m->refcount_order = (unsigned)__builtin_ctzll(refcount_bits);
	m->version = version;
	ret = img_opt_prealloc(opts, &m->prealloc);
	if (ret < 0)
		return ret;
	m->has_backing = opts->backing_file != NULL;
	if (!m->has_backing) {
		ret = img_opt_str(opts, "backing_file", &str);
		if (ret < 0)
			return ret;
		m->has_backing = str != NULL;
	}
	str = NULL;
	ret = img_opt_str(opts, "encrypt.format", &str);
	if (ret < 0)
		return ret;
	if (str && strcmp(str, "luks") == 0)
		return img_error(-ENOTSUP,
				 "qcow2: measure of encrypted images is not "
				 "supported");
	return 0;
}

/* The data bytes src allocates, counted cluster by cluster as QEMU does. */
static int source_required(struct img *src, uint64_t cluster_size,
			   uint64_t *out)
{
	uint64_t ssize = img_size(src), off, required = 0;
	struct img_extent ext;
	int ret;

	for (off = 0; off < ssize; off += ext.len) {
		ret = img_block_status(src, off, ssize - off, 0, &ext);
		if (ret < 0)
			return ret;
		if (!ext.len || ext.len > ssize - off)
			return img_error(-EIO,
					 "qcow2: bad block status length "
					 "%" PRIu64 " at %" PRIu64,
					 ext.len, off);
		if (ext.flags & IMG_EXT_ZERO)
			continue;
		if (!(ext.flags & IMG_EXT_DATA))
			continue;
		/* Round up to the end of the cluster and count the cluster
		 * from its start. */
		ext.len = img_align_up(off + ext.len, cluster_size) - off;
		required += off % cluster_size + ext.len;
	}
	*out = required;
	return 0;
}

/*
 * What copying src's persistent bitmaps into a new image of cluster_size
 * clusters takes, as QEMU counts it: each bitmap fully allocated, its
 * table, and the directory. *has is false when src cannot store bitmaps.
 */
static int bitmaps_size(struct img *src, uint64_t cluster_size, bool *has,
			uint64_t *out)
{
	struct img_bitmap_info *list;
	uint64_t total = 0, dir = 0;
	size_t n;
	int ret = img_bitmap_list(src, &list, &n);

	if (ret == -ENOTSUP) {
		img_clear_error();
		*has = false;
		return 0;
	}
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		uint64_t bytes, clusters;

		if (!list[i].granularity) {
			img_bitmap_list_free(list, n);
			return img_error(
				-IMG_ECORRUPT,
				"qcow2: bitmap of '%s' has granularity 0",
				img_filename(src));
		}
		bytes = div_round_up(
			div_round_up(img_size(src), list[i].granularity), 8);
		clusters = div_round_up(bytes, cluster_size);
		total += clusters * cluster_size +
			 img_align_up(clusters * 8, cluster_size);
		/* A directory entry: 24 bytes, the name, 8-byte aligned. */
		dir += img_align_up(24 + strlen(list[i].name), 8);
	}
	img_bitmap_list_free(list, n);
	*has = true;
	*out = total + img_align_up(dir, cluster_size);
	return 0;
}

int qcow2_measure(const struct img_create_opts *opts, struct img *src,
		  struct img_measure *out)
{
	struct measure_opts m;
	uint64_t virtual_size, required = 0, l2_tables, full;
	int ret;

	ret = parse_opts(opts, &m);
	if (ret < 0)
		return ret;
	virtual_size = src ? img_size(src) : opts->size;
	if (virtual_size > QCOW2_MAX_VIRTUAL_SIZE)
		return img_error(-EINVAL,
				 "qcow2: image size %" PRIu64 " is too large",
				 virtual_size);
	virtual_size = img_align_up(virtual_size, m.cluster_size);
	l2_tables = div_round_up(virtual_size / m.cluster_size,
				 m.cluster_size / m.l2e_size);
	if (l2_tables * 8 > QCOW2_MAX_L1_BYTES)
		return img_error(-EINVAL,
				 "qcow2: image size %" PRIu64
				 " is too large for cluster size %" PRIu64,
				 virtual_size, m.cluster_size);
	if (src) {
		if (m.has_backing) {
			/* The new backing file may share nothing with src. */
			required = virtual_size;
		} else {
			ret = source_required(src, m.cluster_size, &required);
			if (ret < 0)
				return ret;
		}
	}
	if (m.prealloc == IMG_PREALLOC_FULL ||
	    m.prealloc == IMG_PREALLOC_FALLOC)
		required = virtual_size;
	full = prealloc_size(virtual_size, m.cluster_size, m.refcount_order,
			     m.l2e_size);
	out->fully_allocated = full;
	out->required = full - virtual_size + required;
	if (src && m.version >= 3)
		return bitmaps_size(src, m.cluster_size, &out->has_bitmaps,
				    &out->bitmaps);
	return 0;
}
