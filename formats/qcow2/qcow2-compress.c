/* SPDX-License-Identifier: MIT */
/*
 * qcow2 compressed clusters (QEMU docs/interop/qcow2.txt, "Compressed
 * Clusters Descriptor"): decoding and validation of descriptors, reads
 * (decompress one cluster, kept in a one-cluster cache so that small reads of
 * one cluster decompress it once), compressed writes packed back to back into
 * host clusters the way QEMU's qcow2_alloc_bytes does, releasing the space of
 * a compressed cluster, and the count img info reports.
 *
 * Descriptor (x = 62 - (cluster_bits - 8)): bits 0..x-1 are the host byte
 * offset of the compressed data, bits x..61 the number of additional 512-byte
 * sectors it occupies; the data runs from the offset to the end of the last
 * sector, may cross host clusters and may share its first and last sectors
 * with neighbouring compressed clusters. Each host cluster the data touches
 * holds one reference per compressed cluster touching it: a compressed write
 * increments the refcount of every host cluster in [offset, offset + length),
 * and dropping the cluster decrements the same clusters (the sector rounding
 * never reaches another host cluster, as clusters are sector multiples).
 * A compressed write marks enabled dirty bitmaps as a plain write does.
 * Compressed clusters never carry the COPIED flag, have a zero subcluster
 * bitmap with extended L2 entries, and are not allowed with an external data
 * file.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define SECTOR 512ull

static unsigned csize_shift(unsigned cluster_bits)
{
	return 62 - (cluster_bits - 8);
}

int qcow2_compressed_decode(unsigned cluster_bits, uint64_t l2e,
			    uint64_t *file_off, uint64_t *len)
{
	unsigned x = csize_shift(cluster_bits);
	uint64_t off = l2e & ((1ull << x) - 1);
	uint64_t sectors =
		((l2e >> x) & ((1ull << (cluster_bits - 8)) - 1)) + 1;

	if (cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
	    cluster_bits > QCOW2_MAX_CLUSTER_BITS ||
	    !(l2e & QCOW2_OFLAG_COMPRESSED))
		return -EINVAL;
	*file_off = off;
	*len = sectors * SECTOR - (off & (SECTOR - 1));
	if (off < (1ull << cluster_bits))
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: compressed cluster descriptor %#" PRIx64
			" points into the header cluster",
			l2e);
	/* Offsets past what any qcow2 file may hold (bits 9-55 of a normal
	 * entry) would also overflow off + len. */
	if (off + *len > QCOW2_L2E_OFFSET_MASK + 1)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: compressed cluster descriptor %#" PRIx64
			" points past the largest file offset",
			l2e);
	return 0;
}

enum img_compress_type qcow2_compress_codec(const struct qcow2 *s)
{
	return s->h.compression_type == QCOW2_COMPRESSION_ZSTD ?
		       IMG_COMPRESS_ZSTD :
		       IMG_COMPRESS_DEFLATE_RAW;
}

int qcow2_compressed_read(struct qcow2 *s, uint64_t l2e, uint64_t guest_off,
			  uint64_t in, uint64_t n, uint8_t *dst)
{
	uint64_t cs = s->cluster_size, off, len;
	int ret;

	if (in + n > cs)
		return img_error(-EINVAL, "qcow2: bad compressed read");
	if (s->cout_l2e != l2e) {
		ret = qcow2_compressed_decode(s->cluster_bits, l2e, &off, &len);
		if (ret < 0)
			return ret;
		if (!s->cin) {
			s->cin = malloc(2 * cs);
			s->cout = malloc(cs);
			if (!s->cin || !s->cout)
				return img_error(-ENOMEM,
						 "qcow2: out of memory");
		}
		s->cout_l2e = 0;
		/* The descriptor counts whole sectors: the last one may end
		 * past the file when the cluster was the last thing written.
		 * Its first byte must be there (and so all before it). */
		ret = img_data_check(s->img, s->file, 1,
				     off + (len > 512 ? len - 512 : 0),
				     guest_off & ~(cs - 1));
		if (ret == 0)
			ret = img_io_pread(s->file, s->cin, len, off);
		if (ret < 0)
			return ret;
		ret = img_decompress(qcow2_compress_codec(s), s->cin, len,
				     s->cout, cs);
		if (ret < 0)
			return img_error(
				ret,
				"qcow2: compressed cluster at guest offset %#" PRIx64
				" (host offset %#" PRIx64 ", %" PRIu64
				" bytes): %s",
				guest_off, off, len, img_last_error());
		s->cout_l2e = l2e;
	}
	memcpy(dst, s->cout + in, n);
	return 0;
}

int qcow2_compressed_free(struct qcow2 *s, uint64_t l2e)
{
	uint64_t off, len, first, last;
	int ret;

	ret = qcow2_compressed_decode(s->cluster_bits, l2e, &off, &len);
	if (ret < 0)
		return ret;
	if (s->cout_l2e == l2e)
		s->cout_l2e = 0;
	first = off >> s->cluster_bits;
	last = (off + len - 1) >> s->cluster_bits;
	for (uint64_t c = first; c <= last; c++) {
		ret = qcow2_free_cluster_deferred(s, c << s->cluster_bits);
		if (ret < 0)
			return ret;
	}
	return 0;
}

void qcow2_compressed_forget(struct qcow2 *s, uint64_t cluster_idx)
{
	if (s->cpack_off && s->cpack_off >> s->cluster_bits == cluster_idx)
		s->cpack_off = 0;
	s->cout_l2e = 0;
}

void qcow2_compress_release(struct qcow2 *s)
{
	free(s->cin);
	free(s->cout);
	free(s->cstage);
	s->cin = s->cout = s->cstage = NULL;
	s->cout_l2e = 0;
}

int qcow2_compress_params(struct img *img, enum img_compress_type *type,
			  uint64_t *cluster_size)
{
	struct qcow2 *s = img_priv(img);

	if (s->h.crypt_method)
		return img_error(
			-ENOTSUP,
			"Compression and encryption not supported at the same time");
	if (s->data_file != s->file)
		return img_error(
			-ENOTSUP,
			"qcow2: compressed clusters are not supported with an external data file");
	*type = qcow2_compress_codec(s);
	*cluster_size = s->cluster_size;
	return 0;
}

/*
 * Reserve len bytes (len < cluster size) for compressed data right after the
 * previous compressed cluster when they fit, continuing into a newly
 * allocated cluster when it directly follows, else at the start of a new
 * cluster; as QEMU, a host cluster whose refcount is at its maximum is not
 * shared further. Takes one reference on every host cluster touched.
 */
static int alloc_bytes(struct qcow2 *s, uint64_t len, uint64_t *file_off)
{
	uint64_t cs = s->cluster_size, off = s->cpack_off, in_cluster, rc;
	uint64_t new_off;
	int ret;

	if (off) {
		ret = qcow2_refcount_get(s, off >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		if (rc == 0 || rc >= s->refcount_max)
			off = 0;
	}
	in_cluster = off ? cs - (off & (cs - 1)) : 0;
	if (off && in_cluster >= len) {
		ret = qcow2_refcount_update(s, off, len, 1);
	} else {
		/* The new cluster comes with its reference. */
		ret = qcow2_alloc_clusters(s, 1, &new_off);
		if (ret < 0)
			return ret;
		if (off && img_align_up(off, cs) == new_off)
			ret = qcow2_refcount_update(s, off, in_cluster, 1);
		else
			off = new_off;
	}
	if (ret < 0)
		return ret;
	s->cpack_off = (off + len) & (cs - 1) ? off + len : 0;
	*file_off = off;
	return 0;
}

/* Bytes of consecutive compressed data gathered into one host write. */
#define STAGE_SIZE (1u << 20)

static int stage_flush(struct qcow2 *s, uint64_t file_off, uint32_t *len)
{
	int ret;

	if (!*len)
		return 0;
	ret = qcow2_overlap_check(s, 0, file_off, *len);
	if (ret == 0)
		ret = img_io_pwrite(s->file, s->cstage, *len, file_off);
	*len = 0;
	return ret;
}

int qcow2_write_compressed(struct img *img, const struct img_compressed *v,
			   size_t n)
{
	struct qcow2 *s = img_priv(img);
	uint64_t cs = s->cluster_size, run_off = 0, *hosts;
	enum img_compress_type type;
	uint32_t run_len = 0;
	int ret;

	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; writes are refused");
	ret = qcow2_compress_params(img, &type, &cs);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		if (v[i].off & (cs - 1))
			return img_error(-EINVAL,
					 "qcow2: compressed write at %#" PRIx64
					 " is not cluster aligned",
					 v[i].off);
		if (!v[i].len || v[i].len >= cs)
			return img_error(-EINVAL,
					 "qcow2: compressed cluster of %zu "
					 "bytes does not fit a %" PRIu64
					 "-byte cluster",
					 v[i].len, cs);
	}
	/* As plain writes: the enabled bitmaps learn of the change first. */
	for (size_t i = 0; i < n; i++) {
		ret = qcow2_bitmap_mark(s, v[i].off,
					img_min(cs, img_size(img) - v[i].off));
		if (ret < 0)
			return ret;
	}
	if (!s->cstage) {
		s->cstage = malloc(STAGE_SIZE);
		if (!s->cstage)
			return img_error(-ENOMEM, "qcow2: out of memory");
	}
	hosts = malloc(n * sizeof(*hosts));
	if (!hosts)
		return img_error(-ENOMEM, "qcow2: out of memory");

	/* The data of every cluster, back to back where the packing makes
	 * it contiguous, in as few writes as that allows. */
	for (size_t i = 0; i < n; i++) {
		ret = alloc_bytes(s, v[i].len, &hosts[i]);
		if (ret < 0)
			goto out;
		if (run_len && (run_off + run_len != hosts[i] ||
				run_len + v[i].len > STAGE_SIZE)) {
			ret = stage_flush(s, run_off, &run_len);
			if (ret < 0)
				goto out;
		}
		if (!run_len)
			run_off = hosts[i];
		memcpy(s->cstage + run_len, v[i].data, v[i].len);
		run_len += (uint32_t)v[i].len;
	}
	ret = stage_flush(s, run_off, &run_len);
	if (ret < 0)
		goto out;
	s->cout_l2e = 0;

	/* Then the entries: the L2 tables reach the disk only after the
	 * refcount blocks and a flush, so never before the data. */
	for (size_t i = 0; i < n; i++) {
		uint64_t sectors =
			((hosts[i] + v[i].len - 1) >> 9) - (hosts[i] >> 9);

		ret = qcow2_l2_set_entry(
			s, v[i].off,
			hosts[i] | QCOW2_OFLAG_COMPRESSED |
				sectors << csize_shift(s->cluster_bits));
		if (ret < 0)
			goto out;
	}
	if (s->n_pending_free > QCOW2_MAX_PENDING_FREE)
		ret = qcow2_metadata_write_back(s);
out:
	free(hosts);
	return ret;
}

int qcow2_compress_info(struct qcow2 *s, struct img_info *info)
{
	uint64_t n = 0, bytes = 0;
	struct img_field *f;

	for (uint64_t i = 0; i < s->l1_size; i++) {
		uint64_t l2_off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
		uint8_t *t;
		int ret;

		if (!l2_off || (l2_off & (s->cluster_size - 1)))
			continue;
		ret = img_cache_get(s->l2_cache, l2_off, (void **)&t);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; j < s->l2_entries; j++) {
			uint64_t l2e = img_be64(t + j * s->l2_entry_size);
			uint64_t coff, clen;

			if (!(l2e & QCOW2_OFLAG_COMPRESSED) ||
			    qcow2_compressed_decode(s->cluster_bits, l2e, &coff,
						    &clen) < 0)
				continue;
			n++;
			bytes += clen;
		}
		img_cache_put(s->l2_cache, t);
	}
	img_clear_error();
	if (!n || info->n_fields + 2 > IMG_INFO_MAX_FIELDS)
		return 0;
	f = &info->fields[info->n_fields++];
	memset(f, 0, sizeof(*f));
	f->key = "compressed-clusters";
	f->type = IMG_VAL_U64;
	f->u64 = n;
	f = &info->fields[info->n_fields++];
	memset(f, 0, sizeof(*f));
	f->key = "compressed-host-bytes";
	f->type = IMG_VAL_U64;
	f->u64 = bytes;
	return 0;
}
