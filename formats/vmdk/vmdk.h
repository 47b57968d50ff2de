/* SPDX-License-Identifier: MIT */
/*
 * Internal interfaces of the VMDK driver: the parsed text descriptor
 * (vmdk-descriptor.c), the extents an image is made of, and the hosted
 * sparse extent engine (vmdk-sparse.c) that vmdk.c drives.
 */
#ifndef VMDK_H
#define VMDK_H

#include <stdbool.h>
#include <stdint.h>

#include "img-driver.h"

#define VMDK_SECTOR 512u
#define VMDK_MAX_EXTENTS 1024
#define VMDK_MAX_DESC (1u << 20)
#define VMDK_NO_PARENT 0xffffffffu

enum vmdk_ext_type { VMDK_EXT_FLAT, VMDK_EXT_SPARSE, VMDK_EXT_ZERO };

struct vmdk_desc_extent {
	bool read_only;
	enum vmdk_ext_type type;
	uint64_t sectors;
	char *file; /* NULL for ZERO */
	uint64_t flat_sector; /* FLAT: offset in the file */
};

/* A text descriptor, as parsed. */
struct vmdk_desc {
	uint32_t cid;
	uint32_t parent_cid;
	char *create_type;
	char *parent_hint; /* parentFileNameHint, or NULL */
	char *adapter_type;
	char *hw_version;
	struct vmdk_desc_extent *extents;
	unsigned n_extents;
};

/*
 * Parse len bytes of descriptor text. Extent file names are checked: an
 * absolute name or one with a ".." component is refused (-EACCES) unless
 * any_path. Returns 0 or -errno with a "vmdk: ..." message.
 */
int vmdk_desc_parse(const char *text, size_t len, bool any_path,
		    struct vmdk_desc *d);
void vmdk_desc_release(struct vmdk_desc *d);

/* What create writes into a descriptor. */
struct vmdk_desc_opts {
	uint32_t cid;
	uint32_t parent_cid;
	const char *create_type;
	const char *parent_hint; /* or NULL */
	const char *hw_version;
	const char *adapter_type;
	const char *tools_version;
	uint64_t size; /* bytes */
};

/* Format a descriptor with n extents into a malloc'd string. */
int vmdk_desc_format(const struct vmdk_desc_opts *o,
		     const struct vmdk_desc_extent *ext, unsigned n,
		     char **out);

/* ---- hosted sparse extents (vmdk-sparse.c) ---- */

/* Header fields (offsets in the 512-byte header, little endian). */
#define VMDK_MAGIC "KDMV"
#define VMDK_GD_AT_END UINT64_MAX
#define VMDK_FLAG_NL_DETECT (1u << 0)
#define VMDK_FLAG_RGD (1u << 1)
#define VMDK_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK_FLAG_COMPRESS (1u << 16)
#define VMDK_FLAG_MARKER (1u << 17)

struct vmdk_sparse_hdr {
	uint32_t version;
	uint32_t flags;
	uint64_t capacity; /* sectors */
	uint64_t grain_sectors;
	uint64_t desc_sector;
	uint64_t desc_sectors;
	uint32_t gtes_per_gt;
	uint64_t rgd_sector;
	uint64_t gd_sector;
	uint64_t overhead; /* sectors before the first grain */
	uint16_t compress_algorithm;
};

void vmdk_hdr_decode(const uint8_t *buf, struct vmdk_sparse_hdr *h);
void vmdk_hdr_encode(const struct vmdk_sparse_hdr *h, uint8_t *buf);

struct vmdk_gt {
	uint32_t *e; /* host endian, gtes_per_gt entries */
	bool dirty;
};

struct vmdk_extent {
	enum vmdk_ext_type type;
	struct img_io *io; /* NULL for ZERO */
	bool own_io;
	char *file; /* for messages and block status */
	uint64_t start; /* guest byte offset of the extent */
	uint64_t len;
	uint64_t flat_off; /* FLAT: byte offset in the file */
	bool read_only;

	/* SPARSE */
	struct vmdk_sparse_hdr h;
	uint64_t grain_size; /* bytes */
	uint64_t gt_cover; /* guest bytes one GT maps */
	uint32_t n_gts;
	uint32_t *gd; /* host endian, sectors */
	uint32_t *rgd; /* or NULL */
	struct vmdk_gt *gts; /* n_gts, loaded on first use */
	bool gd_dirty;
	bool compressed, markers, zero_grain;
	/* compressed: a convert pipeline compresses the grains (see
	 * vmdk_compress_params); whole grains written plainly are stored. */
	bool pipeline;
	bool at_end; /* GD at the end: metadata rewritten at flush */
	bool appendable; /* at_end: grains may be appended at data_end */
	bool stream_dirty;
	uint64_t next_free; /* bytes: where the next grain or GT goes */
	/* Compressed grains: the one being built, and a buffer for the
	 * compressed bytes written. */
	uint8_t *cbuf; /* compressed bytes, grain_size * 2 + 1 KiB */
	uint8_t *wbuf; /* grain being written */
	uint64_t wbuf_idx; /* UINT64_MAX if none */
	struct img_io wbuf_io; /* wbuf as a file the core reads (.map) */
};

/* Open the sparse extent in e->io (e->len set from the descriptor, or 0 to
 * take the header's capacity). */
int vmdk_sparse_open(struct img *img, struct vmdk_extent *e, bool writable);
void vmdk_sparse_close(struct vmdk_extent *e);
/* .map within one extent, for a read or block status; off (and the
 * region a write map returns) is extent-relative. */
int vmdk_sparse_map(struct img *img, struct vmdk_extent *e, uint64_t off,
		    uint64_t len, struct img_map *m);
/* .map for a write (m->write set): in place, or a plan for .commit. */
int vmdk_sparse_map_write(struct img *img, struct vmdk_extent *e, uint64_t off,
			  uint64_t len, struct img_map *m);
/* .commit of a plan vmdk_sparse_map_write made (it knows its extent). */
int vmdk_sparse_commit(struct img *img, struct img_plan *plan, int result);
/* Zero [off, off + len) by metadata alone (zeroed grains, or grains that
 * read as zeroes already): -ENOTSUP where that cannot be done; apply false
 * only says whether it can. */
int vmdk_sparse_zero(struct img *img, struct vmdk_extent *e, uint64_t off,
		     uint64_t len, bool apply);
/* Append the grain at extent offset off (grain aligned, not yet written)
 * given as a zlib stream of clen bytes (streamOptimized extents only). */
int vmdk_sparse_write_compressed(struct img *img, struct vmdk_extent *e,
				 uint64_t off, const void *cdata, size_t clen);
int vmdk_sparse_flush(struct img *img, struct vmdk_extent *e);
int vmdk_sparse_check(struct vmdk_extent *e, struct img_check *res);
/*
 * Write a new sparse extent of capacity bytes into io: stream selects the
 * streamOptimized layout (compressed grains, GD at the end), else the
 * monolithicSparse one (GD, RGD and every GT preallocated) with
 * zeroed_grain. desc (may be NULL) is embedded at sector 1.
 */
int vmdk_sparse_create(struct img_io *io, uint64_t capacity, bool stream,
		       bool zeroed_grain, const char *desc);

#endif
