/* SPDX-License-Identifier: MIT */
/*
 * Private to the qcow2 driver: on-disk constants from the qcow2 spec (QEMU
 * docs/interop/qcow2.txt, versions 2 and 3), the driver state, and the
 * functions its files share. Host-endian everywhere except in the on-disk
 * byte buffers that qcow2-header.c encodes and decodes.
 */
#ifndef QCOW2_H
#define QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "img-driver.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_V2_HEADER_SIZE 72
#define QCOW2_V3_HEADER_SIZE 104 /* minimum header_length for version 3 */
/* What QEMU 7.2 writes (with compression_type). */
#define QCOW2_HEADER_LENGTH 112

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_REFCOUNT_ORDER 6
#define QCOW2_MAX_BACKING_NAME 1023

/* incompatible_features bits */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN                                     \
	(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT |         \
	 QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION | \
	 QCOW2_INCOMPAT_EXTL2)
/* compatible_features bits */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* autoclear_features bits */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)
#define QCOW2_AUTOCLEAR_KNOWN \
	(QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_FILE_RAW)

/* header extension types */
#define QCOW2_EXT_END 0
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

#define QCOW2_CRYPT_NONE 0
#define QCOW2_CRYPT_AES 1
#define QCOW2_CRYPT_LUKS 2

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* L1 entry: bits 9-55 L2 table offset, bit 63 "copied" (refcount == 1). */
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED 0x7f000000000001ffull
/* L2 entry (first 64 bits of an extended entry too). */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0) /* v3: reads as zeroes */
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_STD_RESERVED 0x3f000000000001feull
/* Refcount table entry: bits 9-63 refcount block offset. */
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define QCOW2_REFT_RESERVED 0x1ffull

/* Extended L2: 32 subclusters; bitmap bit x = allocated, bit 32 + x = zero. */
#define QCOW2_SUBCLUSTERS 32
#define QCOW2_EXTL2_ALLOC_MASK 0xffffffffull
#define QCOW2_EXTL2_ALL_ZERO (0xffffffffull << 32)
#define QCOW2_EXTL2_MIN_CLUSTER_BITS 14

/* Caps on what a header may make us allocate (untrusted input). */
#define QCOW2_MAX_L1_BYTES (32ull << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8ull << 20) /* QEMU's limit */
#define QCOW2_MAX_VIRTUAL_SIZE (1ull << 61) /* keeps off + len in range */

/* A header extension we do not interpret, kept to be written back. */
struct qcow2_ext {
	uint32_t type;
	uint32_t len;
	uint8_t *data;
};

/* One feature-name table entry (QCOW2_EXT_FEATURE_TABLE). */
struct qcow2_feature_name {
	uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
	uint8_t bit;
	char name[47]; /* NUL-terminated copy of the 46-byte field */
};

/* The decoded header, field names as in the spec. */
struct qcow2_header {
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;
};

/* Classification of one guest cluster (or subcluster) in the active L2. */
enum qcow2_cluster_type {
	QCOW2_CLUSTER_UNALLOCATED, /* backing (or zero) shows through */
	QCOW2_CLUSTER_ZERO_PLAIN, /* reads zero, no host cluster */
	QCOW2_CLUSTER_ZERO_ALLOC, /* reads zero, host cluster kept */
	QCOW2_CLUSTER_NORMAL, /* data at host offset */
	QCOW2_CLUSTER_COMPRESSED,
};

struct qcow2 {
	struct img *img;
	struct img_io *
		file; /* the qcow2 file: metadata (and data without a data file) */
	struct img_io *data_file; /* == file unless an external data file */
	bool data_file_raw;
	char *data_file_name; /* from QCOW2_EXT_DATA_FILE, or NULL */
	char *backing_fmt; /* from QCOW2_EXT_BACKING_FORMAT, or NULL */

	struct qcow2_header h;
	unsigned cluster_bits;
	uint64_t cluster_size;
	unsigned l2_bits; /* log2 of entries per L2 table */
	uint64_t l2_entries; /* entries per L2 table */
	unsigned l2_entry_size; /* 8, or 16 with extended L2 */
	bool extended_l2;
	unsigned subcluster_bits; /* log2 subcluster size (== cluster_bits without extl2) */
	unsigned refcount_bits; /* 1 << refcount_order */
	uint64_t refcount_max;
	uint64_t refblock_entries; /* refcounts per refcount block */

	uint64_t *l1; /* l1_size entries, host endian */
	uint32_t l1_size;
	uint64_t *reftable; /* reftable_size entries, host endian */
	uint64_t reftable_size;

	struct img_cache *l2_cache;
	struct img_cache *refblock_cache;

	uint64_t free_cluster_hint; /* lowest cluster index that may be free */
	uint64_t file_end; /* host offset past the last allocated cluster */

	bool read_only;
	bool lazy_refcounts;
	bool unmap; /* IMG_OPEN_UNMAP: punch freed clusters */
	bool dirty_set; /* we set the dirty bit in the file */
	bool corrupt; /* the corrupt bit is set (read-only open) */

	/* Clusters freed since the last flush: their refcount drops only
	 * after the L2/L1 entries that referenced them are on disk. */
	uint64_t *pending_free; /* host offsets of clusters */
	uint64_t n_pending_free, cap_pending_free;

	struct qcow2_ext *unknown_exts; /* preserved on header rewrite */
	size_t n_unknown_exts;
	struct qcow2_feature_name *feature_names;
	size_t n_feature_names;
	uint8_t *crypto_ext; /* QCOW2_EXT_CRYPTO payload, preserved (issue 4) */
	uint32_t crypto_ext_len;
	uint8_t *bitmaps_ext; /* QCOW2_EXT_BITMAPS payload, preserved (issue 3) */
	uint32_t bitmaps_ext_len;

	char *backing_name; /* as the header names it, or NULL */
	uint8_t *header_tail; /* header bytes [112, header_length), preserved */
	uint32_t header_tail_len;
	bool has_backing_fmt_ext; /* write the backing format extension */

	/* Scratch space reused by every request (no malloc in the hot path). */
	struct qcow2_write_plan *plan; /* a write's clusters (qcow2-map.c) */
	unsigned plan_cap;
	uint64_t reftable_used; /* 1 + index of the last non-zero entry */
	struct qcow2_crypt *crypt; /* encryption state (qcow2-crypt.c) */
	/* qcow2-compress.c: where the next compressed cluster's data goes
	 * (0: start a new host cluster), and the last decompressed cluster
	 * (cout, for descriptor cout_l2e; 0: none) with its input buffer. */
	uint64_t cpack_off;
	uint8_t *cin;
	uint8_t *cout;
	uint64_t cout_l2e;
	uint8_t *cstage; /* compressed data gathered for one write */
	struct qcow2_bitmaps *bitmaps; /* qcow2-bitmap.c; NULL: none */
	/* Whether the file looks metadata-preallocated (clusters in use
	 * clearly outnumber the clusters the host allocates): block status
	 * then asks the host file which clusters are holes, as QEMU does.
	 * Decided on the first block status call. */
	bool metadata_prealloc_checked;
	bool metadata_prealloc;
};

/* Pending frees above this count force a metadata write-back cycle. */
#define QCOW2_MAX_PENDING_FREE 4096

/* qcow2-header.c */
/* The header version a compat option names ("0.10"/"v2" -> 2, "1.1"/"v3" ->
 * 3), or 0 for anything else. */
unsigned qcow2_compat_version(const char *compat);
/* Read, decode and validate the header and its extensions into s. */
int qcow2_header_read(struct qcow2 *s);
/* Encode s->h, the backing name and every extension into the first cluster
 * (or clusters) of the file. Does not flush. */
int qcow2_header_write(struct qcow2 *s, const char *backing_name);
/* Set or clear incompatible bits in the file (dirty, corrupt), flushing
 * before (clear) or after (set) as crash safety needs. */
int qcow2_set_incompat(struct qcow2 *s, uint64_t bits, bool on);
/* Mark the image corrupt (best effort) and return -IMG_ECORRUPT with msg. */
int qcow2_signal_corruption(struct qcow2 *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Name of an incompatible feature bit (from the table, else "bit N"). */
const char *qcow2_feature_name(const struct qcow2 *s, unsigned type,
			       unsigned bit, char *buf, size_t buf_size);

/* qcow2-refcount.c */
int qcow2_refcount_init(struct qcow2 *s); /* load the refcount table */
void qcow2_refcount_release(struct qcow2 *s);
int qcow2_refcount_get(struct qcow2 *s, uint64_t cluster_idx, uint64_t *rc);
/* Add delta to the refcount of the clusters covering [file_off, +len). */
int qcow2_refcount_update(struct qcow2 *s, uint64_t file_off, uint64_t len,
			  int64_t delta);
/* Allocate n contiguous clusters (refcount 1); *file_off is the first. */
int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *file_off);
/* Queue a cluster to be released after the next metadata write-back. */
int qcow2_free_cluster_deferred(struct qcow2 *s, uint64_t file_off);
/* Write back L2 tables, then release pending frees, then refcounts. */
int qcow2_metadata_write_back(struct qcow2 *s);
/* Make sure refcount changes reach the disk before the L2/L1 entries that
 * depend on them (write back the refcount blocks and flush); no-op with
 * lazy refcounts. */
int qcow2_refcount_sync(struct qcow2 *s);
/* Index of the first cluster past every cluster with a non-zero refcount
 * (the end of the used part of the file, in clusters). */
int qcow2_refcount_end(struct qcow2 *s, uint64_t *cluster_end);
/* qcow2_overlap_check() ignore bits: metadata kinds a write may overlap. */
#define QCOW2_OL_L2 (1u << 0)
#define QCOW2_OL_REFBLOCK (1u << 1)
/* Refuse (marking the image corrupt) a write of [file_off, +len) to the
 * image file that would overwrite the header, the L1 table, the refcount
 * table, a refcount block, an active L2 table or the snapshot table. */
int qcow2_overlap_check(struct qcow2 *s, unsigned ignore, uint64_t file_off,
			uint64_t len);
/* Free clusters now (refcount -1 each), without deferral: only for
 * clusters no metadata on disk references any more. */
int qcow2_free_clusters_now(struct qcow2 *s, uint64_t file_off, uint64_t len);

/* Entry i of an L2 table (the first 64 bits of an extended entry), its
 * subcluster bitmap (0 without extended L2), and both stored. */
static inline uint64_t qcow2_l2e_at(const struct qcow2 *s, const uint8_t *t,
				    uint64_t i)
{
	return img_be64(t + i * s->l2_entry_size);
}

static inline uint64_t qcow2_bitmap_at(const struct qcow2 *s, const uint8_t *t,
				       uint64_t i)
{
	return s->extended_l2 ? img_be64(t + i * 16 + 8) : 0;
}

static inline void qcow2_l2e_put(const struct qcow2 *s, uint8_t *t, uint64_t i,
				 uint64_t l2e, uint64_t bitmap)
{
	img_put_be64(t + i * s->l2_entry_size, l2e);
	if (s->extended_l2)
		img_put_be64(t + i * 16 + 8, bitmap);
}

static inline bool qcow2_has_data_file(const struct qcow2 *s)
{
	return s->data_file != s->file;
}

/* log2 of the guest bytes one L2 table covers. */
static inline unsigned qcow2_l2_cover_bits(const struct qcow2 *s)
{
	return s->cluster_bits + s->l2_bits;
}

/* qcow2-l2.c: L2 entries as pure functions of the geometry in s (cluster
 * and subcluster size, extended L2, external data file); no I/O. */
struct qcow2_l2_entry {
	uint64_t l2e, bitmap;
	bool has_host; /* names a host cluster (data or preallocated zeroes) */
	/* has_host: the host cluster; compressed: the first byte of its
	 * stream, which runs clen bytes (to the end of its last sector). */
	uint64_t host;
	uint64_t clen;
};
/* Does the entry name a host cluster (offset 0 counts in a data file)? */
bool qcow2_l2_has_host(const struct qcow2 *s, uint64_t l2e);
/* Classify subcluster sc (0 without extended L2) of an entry. */
enum qcow2_cluster_type qcow2_subcluster_type(const struct qcow2 *s,
					      uint64_t l2e, uint64_t bitmap,
					      unsigned sc);
/* The same for the byte in_cluster of a decoded entry's cluster. */
enum qcow2_cluster_type qcow2_l2_type_at(const struct qcow2 *s,
					 const struct qcow2_l2_entry *e,
					 uint64_t in_cluster);
/* Bits of the subclusters that bytes [from, to) of a cluster touch. */
uint64_t qcow2_l2_subcluster_mask(const struct qcow2 *s, uint64_t from,
				  uint64_t to);
/* 0, or -IMG_ECORRUPT with a message naming guest_off when the entry cannot
 * be used: unaligned host offset, a compressed descriptor out of range (or
 * with a bitmap, or in an image with a data file), a subcluster both
 * allocated and zero, allocated subclusters without a host cluster. strict
 * also refuses what QEMU tolerates when it reads (reserved bits, the zero
 * flag of an extended entry), as check reports it. */
int qcow2_l2_validate(const struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		      uint64_t guest_off, bool strict);
/* Validate (not strict) and decode the entry of the cluster at guest_off. */
int qcow2_l2_decode(const struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		    uint64_t guest_off, struct qcow2_l2_entry *e);

/* qcow2-cluster.c: the L1 table and L2 tables */
int qcow2_l2_init(struct qcow2 *s); /* load L1, create the L2 cache */
void qcow2_l2_release(struct qcow2 *s);
/*
 * Pin the L2 table of L1 index i in *t (img_cache_put it). Without alloc a
 * missing table gives *t == NULL. With alloc a missing table is created and
 * a shared one (no COPIED flag) copied; the new table is on disk, with its
 * refcount, before the L1 entry names it.
 */
int qcow2_l2_get(struct qcow2 *s, uint64_t i, bool alloc, uint8_t **t);
/* Grow the L1 table to hold min_size entries (resize). */
int qcow2_grow_l1(struct qcow2 *s, uint64_t min_size);
/* Shrink: free every cluster mapped at or past guest offset new_size (which
 * is cluster aligned) and the L2 tables wholly past it. */
int qcow2_shrink_clusters(struct qcow2 *s, uint64_t new_size);
/* Point the cluster at guest offset off (cluster aligned) at l2e with a
 * zero subcluster bitmap, as a write does (allocating or copying its L2
 * table), and queue the release of what the old entry referenced. */
int qcow2_l2_set_entry(struct qcow2 *s, uint64_t off, uint64_t l2e);
/* qcow2-map.c: the one L2 walk and the guest I/O and mapping built on it. */
/* A guest range of one kind inside one L2 table. */
struct qcow2_run {
	uint64_t off, len;
	enum qcow2_cluster_type type; /* of the subcluster at off */
	/* host is the host offset of off: normal and preallocated zero
	 * clusters, and unallocated subclusters of a hosted cluster. */
	bool hosted;
	uint64_t host;
	struct qcow2_l2_entry e; /* the entry of the cluster holding off */
	uint8_t *table; /* pinned L2 table; NULL: the L1 entry is empty */
	uint64_t idx; /* e's index in table */
};
#define QCOW2_WALK_ALLOC (1u << 0) /* create, or copy if shared, the tables */
#define QCOW2_WALK_CLUSTERS (1u << 1) /* one run per cluster (with a table) */
#define QCOW2_WALK_SKIP_HOLES (1u << 2) /* no run where the L1 entry is empty */
struct qcow2_walker {
	unsigned flags; /* QCOW2_WALK_* */
	/* Each run, in guest order: 0 goes on, > 0 ends the walk (qcow2_walk
	 * returns it), < 0 fails it. */
	int (*run)(struct qcow2 *s, const struct qcow2_run *r, void *opaque);
	/* Optional: after the last run in a table, which is still pinned. */
	int (*table_end)(struct qcow2 *s, uint8_t *t, void *opaque);
};
/*
 * THE walk over the L2 entries of [off, off + len): each L2 table is looked
 * up once (through the cache), every entry is validated once (a bad one
 * marks the image corrupt), and contiguous subclusters of one kind (same
 * type, contiguous host offsets, never two compressed clusters) come out as
 * one run. A run never spans two tables. Callbacks may change entries of
 * r->table (marking it dirty) but not pin other tables of the image.
 */
int qcow2_walk(struct qcow2 *s, uint64_t off, uint64_t len,
	       const struct qcow2_walker *w, void *opaque);
/* qcow2_l2_validate for the walkers outside qcow2-map.c, marking the image
 * corrupt on failure. */
int qcow2_l2_check(struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		   uint64_t guest_off);
int qcow2_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags);
/* The driver's .map and .commit (lib/img-driver.h, struct img_map): reads,
 * block status, and writes as planned by qcow2-map.c. */
int qcow2_map(struct img *img, uint64_t off, uint64_t len, struct img_map *m);
int qcow2_commit(struct img *img, struct img_plan *plan, int result);
int qcow2_block_status(struct img *img, uint64_t off, uint64_t len,
		       struct img_extent *ext);
/* Allocate L2 tables and data clusters for [off, off + len) (preallocation). */
int qcow2_preallocate(struct qcow2 *s, uint64_t off, uint64_t len,
		      enum img_prealloc mode);

/* qcow2-check.c */
int qcow2_check(struct img *img, unsigned flags, struct img_check *res);
/* Recompute every refcount from the metadata and rewrite the refcount
 * structures (dirty image with lazy refcounts, check -r all). */
int qcow2_rebuild_refcounts(struct qcow2 *s, struct img_check *res);

/* qcow2-bitmap.c */
/* Validate the bitmaps extension and directory (after the refcounts and L1
 * are loaded); a stale extension (autoclear bit 0 clear) is dropped. */
int qcow2_bitmap_open(struct qcow2 *s);
void qcow2_bitmap_release(struct qcow2 *s);
/* Mark guest range [off, +len) dirty in the enabled bitmaps before a write,
 * zero or discard changes it (sets in_use in the file first). */
int qcow2_bitmap_mark(struct qcow2 *s, uint64_t off, uint64_t len);
/* Store changed bitmaps and clear in_use (part of every flush). */
int qcow2_bitmap_flush(struct qcow2 *s);
/* Resize: before anything changes, refuse inconsistent bitmaps and mark all
 * in use; after the header holds the new size, store them resized. */
int qcow2_bitmap_resize_begin(struct qcow2 *s);
int qcow2_bitmap_resize_end(struct qcow2 *s, uint64_t old_size);
extern const struct img_bitmap_ops qcow2_bitmap_ops;

/* qcow2-compress.c */
/* Decode a compressed L2 entry into the host byte range of its data (offset,
 * and length up to the end of its last 512-byte sector). -EINVAL if l2e is
 * not compressed; -IMG_ECORRUPT (with a message) if the range is impossible. */
int qcow2_compressed_decode(unsigned cluster_bits, uint64_t l2e,
			    uint64_t *file_off, uint64_t *len);
/* The codec of the image's compressed clusters. */
enum img_compress_type qcow2_compress_codec(const struct qcow2 *s);
/* Copy bytes [in, in + n) of the compressed cluster l2e (at guest_off) to
 * dst. */
int qcow2_compressed_read(struct qcow2 *s, uint64_t l2e, uint64_t guest_off,
			  uint64_t in, uint64_t n, uint8_t *dst);
/* Queue the release of the host clusters a compressed entry references. */
int qcow2_compressed_free(struct qcow2 *s, uint64_t l2e);
/* The refcount of host cluster cluster_idx dropped to zero. */
void qcow2_compressed_forget(struct qcow2 *s, uint64_t cluster_idx);
void qcow2_compress_release(struct qcow2 *s);
int qcow2_compress_params(struct img *img, enum img_compress_type *type,
			  uint64_t *cluster_size);
int qcow2_write_compressed(struct img *img, const struct img_compressed *v,
			   size_t n);
/* Add the compressed-cluster count and size to *info (when there are any). */
int qcow2_compress_info(struct qcow2 *s, struct img_info *info);

/* qcow2-amend.c */
int qcow2_amend(struct img *img, const struct img_kv *opts, size_t n,
		const struct img_progress *progress);
extern const struct img_opt_desc qcow2_amend_opts[];
/* Make every guest range unallocated and trim the file (commit). */
int qcow2_make_empty(struct img *img);
/* Rewrite the backing name and format in the header (qcow2.c). */
int qcow2_set_backing(struct img *img, const char *name, const char *fmt);
/* The driver (qcow2.c), for the ops amend reuses. */
extern const struct img_driver qcow2_driver;

/* qcow2-snapshot.c: the internal snapshot driver ops (see img-driver.h). */
int qcow2_snapshot_list(struct img *img, struct img_snapshot_info **out,
			size_t *n);
int qcow2_snapshot_create(struct img *img, const char *name);
int qcow2_snapshot_apply(struct img *img, const char *name_or_id);
int qcow2_snapshot_delete(struct img *img, const char *name_or_id);
int qcow2_snapshot_load(struct img *img, const char *name_or_id);
/* check: report (and with IMG_CHECK_FIX_ERRORS in fix, complete) v3 table
 * entries without the mandatory extra data, counting corruptions. */
int qcow2_snapshot_check_table(struct qcow2 *s, unsigned fix,
			       struct img_check *res);

/* qcow2-crypt.c: encryption (crypt_method 1 read-only, 2 LUKS) */
/* Set up s->crypt when the image is encrypted: parse the LUKS header and,
 * unless IMG_OPEN_NO_IO, unlock it with the image's secret (-EACCES). */
int qcow2_crypt_open(struct qcow2 *s, unsigned flags);
void qcow2_crypt_close(struct qcow2 *s);
/* The cipher the image's data is encrypted with, for struct img_map (NULL:
 * not encrypted); lives as long as s->crypt. */
struct img_cipher *qcow2_crypt_cipher(struct qcow2 *s);
/* Validate encryption=on / encrypt.format=FMT create options. */
int qcow2_crypt_check_opts(const struct img_create_opts *o, bool enc,
			   const char *fmt, enum img_prealloc prealloc);
/* Make the LUKS area of a new image (after its L1 table) and point the
 * header at it; the caller writes the header. */
int qcow2_crypt_create(struct qcow2 *s, const struct img_create_opts *o);
/* Host offsets of an encrypted image are not raw data: block status hides
 * them, as QEMU does. */
bool qcow2_crypt_hides_offsets(const struct qcow2 *s);
/* The driver's crypt->info op (img_crypt_info). */
int qcow2_crypt_info(struct img *img, struct img_crypt_info *out);
/* amend's encrypt.* options (state, keyslot, new-secret, old-secret,
 * iter-time): add or erase LUKS key slots, as qemu-img amend. */
int qcow2_crypt_amend(struct qcow2 *s, const struct img_kv *kv, size_t n);

/* qcow2-measure.c */
int qcow2_measure(const struct img_create_opts *opts, struct img *src,
		  struct img_measure *out);

#endif
