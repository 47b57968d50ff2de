/* SPDX-License-Identifier: MIT */
/*
 * Hosted sparse VMDK extents (Virtual Disk Format 1.1, "Hosted Sparse
 * Extents" and "Stream-Optimized Compressed Sparse Extents"): the 512-byte
 * "KDMV" header, the grain directory (GD) and its redundant copy (RGD), grain
 * tables (GT) of 32-bit sector numbers (0 unallocated, 1 a zeroed grain when
 * the header says so), plain grains, and deflate-compressed grains (zlib
 * format, each behind a 12-byte marker: LBA, size). A stream-optimized
 * extent may keep its metadata at the end (gdOffset = -1): GT, GD, footer
 * and end-of-stream markers follow the grains, and the footer (a copy of
 * the header with the real gdOffset) sits 1536 bytes before the end.
 *
 * GTs are loaded into memory on first use. Writes are planned through .map
 * and the core moves the data: plain extents overwrite allocated grains in
 * place and reserve new grains (and GTs where the GD has none) at the end
 * of the file, which the core writes whole (the backing file's bytes or
 * zeroes around the request) before the commit points the GT entry at
 * them; compressed grains are assembled in memory (see
 * vmdk_map_write_stream) and appended at commit or when the next grain
 * starts. Dirty GTs, the GD and the RGD are written at flush, after the
 * data has been flushed, so a crash leaves at worst unreferenced grains.
 * Stream extents with the metadata at the end accept grains only while
 * appendable (no grain yet when opened) and each grain once; flush writes
 * the GTs, the GD, the footer and the end-of-stream marker after the last
 * grain (a later write overwrites them and the next flush rewrites them).
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vmdk.h"

/* Compressed grains are at most twice the grain (QEMU's limit too): the
 * buffer holds one behind its 12-byte marker, padded to a sector. */
#define VMDK_CBUF(e) (2 * (e)->grain_size + 2 * VMDK_SECTOR)

#define MARKER_EOS 0
#define MARKER_GT 1
#define MARKER_GD 2
#define MARKER_FOOTER 3
#define VMDK_MAX_GRAIN (2u << 20)
#define VMDK_DESC_SECTORS 20
#define VMDK_DEFAULT_GRAIN_SECTORS 128
#define VMDK_GTES 512

void vmdk_hdr_decode(const uint8_t *b, struct vmdk_sparse_hdr *h)
{
	h->version = img_le32(b + 4);
	h->flags = img_le32(b + 8);
	h->capacity = img_le64(b + 12);
	h->grain_sectors = img_le64(b + 20);
	h->desc_sector = img_le64(b + 28);
	h->desc_sectors = img_le64(b + 36);
	h->gtes_per_gt = img_le32(b + 44);
	h->rgd_sector = img_le64(b + 48);
	h->gd_sector = img_le64(b + 56);
	h->overhead = img_le64(b + 64);
	h->compress_algorithm = img_le16(b + 77);
}

void vmdk_hdr_encode(const struct vmdk_sparse_hdr *h, uint8_t *b)
{
	memset(b, 0, VMDK_SECTOR);
	memcpy(b, VMDK_MAGIC, 4);
	img_put_le32(b + 4, h->version);
	img_put_le32(b + 8, h->flags);
	img_put_le64(b + 12, h->capacity);
	img_put_le64(b + 20, h->grain_sectors);
	img_put_le64(b + 28, h->desc_sector);
	img_put_le64(b + 36, h->desc_sectors);
	img_put_le32(b + 44, h->gtes_per_gt);
	img_put_le64(b + 48, h->rgd_sector);
	img_put_le64(b + 56, h->gd_sector);
	img_put_le64(b + 64, h->overhead);
	memcpy(b + 73, "\n \r\n", 4);
	img_put_le16(b + 77, h->compress_algorithm);
}

static uint64_t vmdk_gt_bytes(const struct vmdk_extent *e)
{
	return (uint64_t)e->h.gtes_per_gt * 4;
}

static uint64_t vmdk_file_size(struct vmdk_extent *e)
{
	uint64_t size = 0;

	if (img_io_size(e->io, &size) < 0)
		return 0;
	return size;
}

static struct vmdk_extent *vmdk_of_wbuf_io(struct img_io *io)
{
	return (struct vmdk_extent *)((char *)io -
				      offsetof(struct vmdk_extent, wbuf_io));
}

static int vmdk_wbuf_io_pread(struct img_io *io, void *buf, uint64_t len,
			      uint64_t file_off)
{
	struct vmdk_extent *e = vmdk_of_wbuf_io(io);

	memcpy(buf, e->wbuf + file_off, len);
	return 0;
}

static int vmdk_wbuf_io_pwrite(struct img_io *io, const void *buf, uint64_t len,
			       uint64_t file_off)
{
	struct vmdk_extent *e = vmdk_of_wbuf_io(io);

	memcpy(e->wbuf + file_off, buf, len);
	return 0;
}

static int vmdk_wbuf_io_size(struct img_io *io, uint64_t *size)
{
	*size = vmdk_of_wbuf_io(io)->grain_size;
	return 0;
}

/* The grain being assembled, for the core to read and write as plain
 * data (its offsets are within the grain: .map says so). */
static const struct img_io_ops vmdk_wbuf_io_ops = {
	.name = "vmdk-grain",
	.pread = vmdk_wbuf_io_pread,
	.pwrite = vmdk_wbuf_io_pwrite,
	.get_size = vmdk_wbuf_io_size,
};

/* The footer of a stream extent whose header says "GD at the end". */
static int vmdk_read_footer(struct vmdk_extent *e, uint64_t file_size)
{
	uint8_t buf[3 * VMDK_SECTOR];
	int ret;

	if (file_size < 4 * VMDK_SECTOR)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: '%s' is too small for a footer",
				 e->file);
	ret = img_io_pread(e->io, buf, sizeof(buf), file_size - sizeof(buf));
	if (ret < 0)
		return ret;
	if (img_le32(buf + 8) != 0 || img_le32(buf + 12) != MARKER_FOOTER ||
	    memcmp(buf + VMDK_SECTOR, VMDK_MAGIC, 4) ||
	    img_le64(buf + 2 * VMDK_SECTOR) != 0 ||
	    img_le32(buf + 2 * VMDK_SECTOR + 8) != 0 ||
	    img_le32(buf + 2 * VMDK_SECTOR + 12) != MARKER_EOS)
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: '%s' has no valid footer and end-of-stream marker",
			e->file);
	vmdk_hdr_decode(buf + VMDK_SECTOR, &e->h);
	if (e->h.gd_sector == VMDK_GD_AT_END)
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: the footer of '%s' has no grain directory offset",
			e->file);
	return 0;
}

static int vmdk_check_header(struct vmdk_extent *e, const uint8_t *b)
{
	const struct vmdk_sparse_hdr *h = &e->h;

	if (h->version < 1 || h->version > 3)
		return img_error(
			-ENOTSUP,
			"vmdk: unsupported sparse extent version %" PRIu32,
			h->version);
	if ((h->flags & VMDK_FLAG_NL_DETECT) && memcmp(b + 73, "\n \r\n", 4))
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: the newline check bytes of '%s' are damaged (text-mode transfer?)",
			e->file);
	if ((h->flags & VMDK_FLAG_COMPRESS) && h->compress_algorithm != 1)
		return img_error(-ENOTSUP,
				 "vmdk: unsupported compression algorithm %u",
				 h->compress_algorithm);
	if (!img_is_pow2(h->grain_sectors) ||
	    h->grain_sectors > VMDK_MAX_GRAIN / VMDK_SECTOR)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: grain size of %" PRIu64
				 " sectors is not a power of two up to 2 MiB",
				 h->grain_sectors);
	if (h->gtes_per_gt < 1 || h->gtes_per_gt > VMDK_GTES)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: %" PRIu32
				 " entries per grain table (1..512)",
				 h->gtes_per_gt);
	if (h->capacity > (UINT64_MAX >> 10))
		return img_error(-IMG_ECORRUPT,
				 "vmdk: capacity of %" PRIu64
				 " sectors is too large",
				 h->capacity);
	return 0;
}

static int vmdk_read_gd(struct vmdk_extent *e, uint64_t sector,
			uint64_t file_size, uint32_t **out)
{
	uint64_t bytes = (uint64_t)e->n_gts * 4;
	uint32_t *gd;
	int ret;

	if (sector > file_size / VMDK_SECTOR ||
	    bytes > file_size - sector * VMDK_SECTOR)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: grain directory at sector %" PRIu64
				 " (%" PRIu32 " entries) is outside '%s'",
				 sector, e->n_gts, e->file);
	gd = malloc(bytes ? bytes : 1);
	if (!gd)
		return img_error(-ENOMEM, "vmdk: out of memory");
	ret = img_io_pread(e->io, gd, bytes, sector * VMDK_SECTOR);
	if (ret < 0) {
		free(gd);
		return ret;
	}
	for (uint32_t i = 0; i < e->n_gts; i++)
		gd[i] = img_le32(&gd[i]);
	*out = gd;
	return 0;
}

int vmdk_sparse_open(struct img *img, struct vmdk_extent *e, bool writable)
{
	uint8_t b[VMDK_SECTOR];
	uint64_t file_size = vmdk_file_size(e), grains;
	int ret;

	ret = img_io_pread(e->io, b, sizeof(b), 0);
	if (ret < 0)
		return ret;
	if (memcmp(b, VMDK_MAGIC, 4))
		return img_error(
			memcmp(b, "COWD", 4) ? -IMG_ECORRUPT : -ENOTSUP,
			"vmdk: '%s' is not a hosted sparse extent (no KDMV magic)",
			e->file);
	vmdk_hdr_decode(b, &e->h);
	if (e->h.gd_sector == VMDK_GD_AT_END) {
		e->at_end = true;
		ret = vmdk_read_footer(e, file_size);
		if (ret < 0)
			return ret;
	}
	ret = vmdk_check_header(e, b);
	if (ret < 0)
		return ret;
	e->grain_size = e->h.grain_sectors * VMDK_SECTOR;
	e->gt_cover = e->grain_size * e->h.gtes_per_gt;
	if (!e->len)
		e->len = e->h.capacity * VMDK_SECTOR;
	if (e->len > e->h.capacity * VMDK_SECTOR)
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: extent '%s' of %" PRIu64
			" bytes is larger than its capacity of %" PRIu64
			" sectors",
			e->file, e->len, e->h.capacity);
	grains = (e->h.capacity + e->h.grain_sectors - 1) / e->h.grain_sectors;
	if ((grains + e->h.gtes_per_gt - 1) / e->h.gtes_per_gt > UINT32_MAX)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: grain directory too large");
	e->n_gts =
		(uint32_t)((grains + e->h.gtes_per_gt - 1) / e->h.gtes_per_gt);
	e->compressed = e->h.flags & VMDK_FLAG_COMPRESS;
	e->markers = e->h.flags & VMDK_FLAG_MARKER;
	e->zero_grain = e->h.flags & VMDK_FLAG_ZERO_GRAIN;
	ret = img_metadata_check(img,
				 (uint64_t)e->n_gts * (4 + sizeof(*e->gts)),
				 "a grain directory");
	if (ret < 0)
		return ret;
	ret = vmdk_read_gd(e, e->h.gd_sector, file_size, &e->gd);
	if (ret < 0)
		return ret;
	if (writable && !e->at_end && (e->h.flags & VMDK_FLAG_RGD) &&
	    e->h.rgd_sector) {
		ret = vmdk_read_gd(e, e->h.rgd_sector, file_size, &e->rgd);
		if (ret < 0)
			return ret;
	}
	e->gts = calloc(e->n_gts ? e->n_gts : 1, sizeof(*e->gts));
	if (!e->gts)
		return img_error(-ENOMEM, "vmdk: out of memory");
	/* New grains start at a grain boundary past the end, as in QEMU: a
	 * file cut inside its last grain must not get a new grain on top of
	 * that grain's (lost) tail. */
	e->next_free = img_align_up(file_size, e->grain_size);
	if (e->at_end) {
		/* Appendable only while it holds no grain: new grains then go
		 * where the metadata starts (the GD's marker). */
		e->appendable = e->h.gd_sector > 1;
		for (uint32_t i = 0; i < e->n_gts && e->appendable; i++)
			e->appendable = !e->gd[i];
		if (e->appendable)
			e->next_free = (e->h.gd_sector - 1) * VMDK_SECTOR;
	}
	e->wbuf_idx = UINT64_MAX;
	if (e->compressed) {
		e->cbuf = malloc(VMDK_CBUF(e));
		e->wbuf = malloc(e->grain_size);
		if (!e->cbuf || !e->wbuf)
			return img_error(-ENOMEM, "vmdk: out of memory");
		e->wbuf_io.ops = &vmdk_wbuf_io_ops;
		e->wbuf_io.path = e->file;
		e->wbuf_io.flags = writable ? 0 : IMG_IO_RDONLY;
	}
	return 0;
}

void vmdk_sparse_close(struct vmdk_extent *e)
{
	if (e->gts)
		for (uint32_t i = 0; i < e->n_gts; i++)
			free(e->gts[i].e);
	free(e->gts);
	free(e->gd);
	free(e->rgd);
	free(e->cbuf);
	free(e->wbuf);
}

/* Append a zeroed GT (and one for the RGD) in the file for GD entry i. */
static int vmdk_alloc_gt_space(struct vmdk_extent *e, uint32_t i)
{
	uint64_t bytes = img_align_up(vmdk_gt_bytes(e), VMDK_SECTOR);
	unsigned copies = e->rgd ? 2 : 1;
	int ret;

	if ((e->next_free + copies * bytes) / VMDK_SECTOR > UINT32_MAX)
		return img_error(-ENOSPC, "vmdk: '%s' is full", e->file);
	ret = img_io_zero(e->io, e->next_free, copies * bytes, 0);
	if (ret < 0)
		return ret;
	e->gd[i] = (uint32_t)(e->next_free / VMDK_SECTOR);
	if (e->rgd)
		e->rgd[i] = (uint32_t)((e->next_free + bytes) / VMDK_SECTOR);
	e->next_free += copies * bytes;
	e->gd_dirty = true;
	return 0;
}

/*
 * The GT for GD entry i in memory: *out NULL when the GD has none and
 * create is false.
 */
static int vmdk_gt(struct vmdk_extent *e, uint32_t i, bool create,
		   uint32_t **out)
{
	struct vmdk_gt *gt = &e->gts[i];
	uint64_t bytes = vmdk_gt_bytes(e), off;
	int ret;

	*out = NULL;
	if (gt->e) {
		*out = gt->e;
		return 0;
	}
	if (!e->gd[i] && !create)
		return 0;
	gt->e = calloc(e->h.gtes_per_gt, 4);
	if (!gt->e)
		return img_error(-ENOMEM, "vmdk: out of memory");
	if (!e->gd[i]) {
		gt->dirty = true;
		if (!e->at_end) {
			ret = vmdk_alloc_gt_space(e, i);
			if (ret < 0)
				goto fail;
		}
		*out = gt->e;
		return 0;
	}
	off = (uint64_t)e->gd[i] * VMDK_SECTOR;
	if (off + bytes > img_align_up(vmdk_file_size(e), VMDK_SECTOR)) {
		ret = img_error(-IMG_ECORRUPT,
				"vmdk: grain table %" PRIu32
				" at sector %" PRIu32 " is outside '%s'",
				i, e->gd[i], e->file);
		goto fail;
	}
	ret = img_io_pread(e->io, gt->e, bytes, off);
	if (ret < 0)
		goto fail;
	for (uint32_t k = 0; k < e->h.gtes_per_gt; k++)
		gt->e[k] = img_le32(&gt->e[k]);
	*out = gt->e;
	return 0;
fail:
	free(gt->e);
	gt->e = NULL;
	return ret;
}

/* The GT entry of the grain at extent offset off (0 if none). */
static int vmdk_gte(struct vmdk_extent *e, uint64_t off, uint32_t *gte)
{
	uint64_t grain = off / e->grain_size;
	uint32_t *gt;
	int ret;

	ret = vmdk_gt(e, (uint32_t)(grain / e->h.gtes_per_gt), false, &gt);
	if (ret < 0)
		return ret;
	*gte = gt ? gt[grain % e->h.gtes_per_gt] : 0;
	return 0;
}

/* Point the GT entry of grain at s (sector). */
static int vmdk_set_gte(struct vmdk_extent *e, uint64_t grain, uint32_t s)
{
	uint32_t i = (uint32_t)(grain / e->h.gtes_per_gt), *gt;
	int ret;

	ret = vmdk_gt(e, i, true, &gt);
	if (ret < 0)
		return ret;
	gt[grain % e->h.gtes_per_gt] = s;
	e->gts[i].dirty = true;
	return 0;
}

/* Append a grain's deflate (zlib) stream of clen bytes behind a marker. */
static int vmdk_append_grain(struct vmdk_extent *e, uint64_t grain,
			     const void *cdata, size_t clen)
{
	uint64_t total = img_align_up(12 + clen, VMDK_SECTOR);
	int ret;

	if (e->next_free / VMDK_SECTOR >= UINT32_MAX)
		return img_error(-ENOSPC, "vmdk: '%s' is full", e->file);
	if (!clen || clen > 2 * e->grain_size)
		return img_error(-EINVAL, "vmdk: compressed grain of %zu bytes",
				 clen);
	if (cdata != e->cbuf + 12)
		memcpy(e->cbuf + 12, cdata, clen);
	img_put_le64(e->cbuf, grain * e->h.grain_sectors);
	img_put_le32(e->cbuf + 8, (uint32_t)clen);
	memset(e->cbuf + 12 + clen, 0, total - 12 - clen);
	ret = img_io_pwrite(e->io, e->cbuf, total, e->next_free);
	if (ret < 0)
		return ret;
	ret = vmdk_set_gte(e, grain, (uint32_t)(e->next_free / VMDK_SECTOR));
	if (ret < 0)
		return ret;
	e->next_free += total;
	e->stream_dirty = true;
	return 0;
}

/*
 * Compress one grain (zlib's default level, as QEMU) and append it. A
 * whole grain that the convert pipeline writes plainly did not compress at
 * that level: it is stored (deflate level 0), no larger and far cheaper.
 */
static int vmdk_append_compressed(struct vmdk_extent *e, uint64_t grain,
				  const uint8_t *data, bool whole)
{
	uLongf zlen = (uLongf)(2 * e->grain_size);
	int clen, z;

	if (whole && e->pipeline) {
		z = compress2(e->cbuf + 12, &zlen, data, (uLong)e->grain_size,
			      Z_NO_COMPRESSION);
		if (z != Z_OK)
			return img_error(-EIO, "vmdk: deflate failed (%d)", z);
		return vmdk_append_grain(e, grain, e->cbuf + 12, zlen);
	}
	clen = img_compress(IMG_COMPRESS_DEFLATE_ZLIB, 0, data, e->grain_size,
			    e->cbuf + 12, 2 * e->grain_size);
	if (clen < 0)
		return img_error(clen, "vmdk: deflate failed: %s",
				 img_last_error());
	return vmdk_append_grain(e, grain, e->cbuf + 12, (size_t)clen);
}

/* Write the grain being assembled, if any. */
static int vmdk_put_wbuf(struct img *img, struct vmdk_extent *e)
{
	uint64_t grain = e->wbuf_idx;

	if (grain == UINT64_MAX)
		return 0;
	/* A read may be copying the grain out of wbuf, which the next grain
	 * overwrites. */
	img_direct_drain(img);
	e->wbuf_idx = UINT64_MAX;
	if (img_is_zero(e->wbuf, e->grain_size) && !img_has_backing(img))
		return 0;
	return vmdk_append_compressed(e, grain, e->wbuf, false);
}

/*
 * Whether grain (at extent offset off) of a compressed extent may still be
 * written: grains are appended once. *gte gets the grain's entry.
 */
static int vmdk_grain_unwritten(struct vmdk_extent *e, uint64_t off,
				uint32_t *gte)
{
	uint64_t grain = off / e->grain_size;
	int ret;

	if (e->at_end && !e->appendable)
		return img_error(
			-ENOTSUP,
			"vmdk: '%s' is a finished streamOptimized image: writes are not supported",
			e->file);
	ret = vmdk_gte(e, off, gte);
	if (ret < 0)
		return ret;
	if (*gte > 1 || (*gte == 1 && !e->zero_grain) || e->wbuf_idx == grain)
		return img_error(-ENOTSUP,
				 "vmdk: grain %" PRIu64
				 " of streamOptimized '%s' is already written",
				 grain, e->file);
	return 0;
}

int vmdk_sparse_write_compressed(struct img *img, struct vmdk_extent *e,
				 uint64_t off, const void *cdata, size_t clen)
{
	uint32_t gte;
	int ret;

	if (!e->compressed || off % e->grain_size)
		return img_error(
			-ENOTSUP,
			"vmdk: compressed writes need subformat=streamOptimized");
	ret = vmdk_grain_unwritten(e, off, &gte);
	if (ret >= 0)
		ret = vmdk_put_wbuf(img, e);
	return ret < 0 ? ret :
			 vmdk_append_grain(e, off / e->grain_size, cdata, clen);
}

/*
 * A planned write (struct img_map.plan). Plain extents: n new grains from
 * grain0, placed one after another from host sector sector0, which their
 * GT names at commit. Compressed extents: one grain (n 1), whose region
 * the core writes into buf through io; the commit stores it compressed
 * (whole: the request covered the grain) or keeps it as the grain being
 * assembled.
 */
struct img_plan {
	struct vmdk_extent *e;
	uint64_t grain0, n;
	uint32_t sector0;
	bool whole;
	uint8_t *buf;
	struct img_io io;
};

static int vmdk_plan_io_pwrite(struct img_io *io, const void *buf, uint64_t len,
			       uint64_t file_off)
{
	struct img_plan *p =
		(struct img_plan *)((char *)io - offsetof(struct img_plan, io));

	memcpy(p->buf + file_off, buf, len);
	return 0;
}

static int vmdk_plan_io_size(struct img_io *io, uint64_t *size)
{
	struct img_plan *p =
		(struct img_plan *)((char *)io - offsetof(struct img_plan, io));

	*size = p->e->grain_size;
	return 0;
}

/* A new compressed grain as the core writes it. */
static const struct img_io_ops vmdk_plan_io_ops = {
	.name = "vmdk-new-grain",
	.pwrite = vmdk_plan_io_pwrite,
	.get_size = vmdk_plan_io_size,
};

static void vmdk_plan_free(struct img_plan *p)
{
	free(p->buf);
	free(p);
}

/*
 * The end (extent offset) of the region of new grains ending at grain end:
 * whole grains, except where the last one runs past the end of an extent
 * that another follows (past the disk's end the core writes zeroes).
 */
static uint64_t vmdk_region_end(struct img *img, const struct vmdk_extent *e,
				uint64_t end)
{
	uint64_t off = end * e->grain_size;

	if (off > e->len && e->start + e->len < img_size(img))
		off = e->len;
	return off;
}

/* A grain entry a write may follow: not into the header, descriptor and
 * tables (the read map lets those be read). */
static int vmdk_gte_writable(const struct vmdk_extent *e, uint64_t grain,
			     uint32_t gte)
{
	if (gte == 1 && !e->zero_grain)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: grain %" PRIu64
				 " of '%s' points at the header",
				 grain, e->file);
	if (gte > 1 && gte < e->h.overhead)
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: grain %" PRIu64 " of '%s' at sector %" PRIu32
			" lies in the metadata (before sector %" PRIu64 ")",
			grain, e->file, gte, e->h.overhead);
	return 0;
}

/*
 * Plain extents: allocated grains are overwritten in place, as long a run
 * as is contiguous in the file; unallocated and zeroed grains get new
 * grains at the end of the file (a run of them within one GT, the GT made
 * first since it may take that space too), written whole: the core fills
 * what the request does not cover from the backing file or zeroes.
 */
static int vmdk_map_write_plain(struct img *img, struct vmdk_extent *e,
				uint64_t off, uint64_t len, struct img_map *m)
{
	uint64_t grain = off / e->grain_size, in = off % e->grain_size;
	uint64_t n = img_min(len, e->grain_size - in), g, last;
	uint32_t gte, next, *gt;
	struct img_plan *p;
	int ret;

	ret = vmdk_gte(e, off, &gte);
	if (ret >= 0)
		ret = vmdk_gte_writable(e, grain, gte);
	if (ret < 0)
		return ret;
	m->len = n;
	if (gte > 1) {
		while (n < len) {
			ret = vmdk_gte(e, off + n, &next);
			if (ret < 0)
				return ret;
			if (next != gte + (in + n) / VMDK_SECTOR)
				break;
			n = img_min(len, n + e->grain_size);
		}
		m->len = n;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->io = e->io;
		m->file_off = (uint64_t)gte * VMDK_SECTOR + in;
		return 0;
	}
	if (m->write == IMG_MAP_WRITE_IN_PLACE) {
		m->flags = 0;
		return 0;
	}
	last = img_min((off + len - 1) / e->grain_size,
		       (grain / e->h.gtes_per_gt + 1) * e->h.gtes_per_gt - 1);
	for (g = grain + 1; g <= last; g++) {
		ret = vmdk_gte(e, g * e->grain_size, &next);
		if (ret < 0)
			return ret;
		if (next > 1 || (next == 1 && !e->zero_grain))
			break;
	}
	ret = vmdk_gt(e, (uint32_t)(grain / e->h.gtes_per_gt), true, &gt);
	if (ret < 0)
		return ret;
	if ((e->next_free + (g - grain) * e->grain_size) / VMDK_SECTOR >
	    UINT32_MAX)
		return img_error(-ENOSPC, "vmdk: '%s' is full", e->file);
	p = calloc(1, sizeof(*p));
	if (!p)
		return img_error(-ENOMEM, "vmdk: out of memory");
	*p = (struct img_plan){ .e = e,
				.grain0 = grain,
				.n = g - grain,
				.sector0 = (uint32_t)(e->next_free /
						      VMDK_SECTOR) };
	e->next_free += p->n * e->grain_size;
	m->plan = p;
	m->len = img_min(len, p->n * e->grain_size - in);
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->io = e->io;
	m->file_off = (uint64_t)p->sector0 * VMDK_SECTOR + in;
	m->region_off = grain * e->grain_size;
	m->region_len = vmdk_region_end(img, e, g) - m->region_off;
	return 0;
}

/*
 * Compressed extents: the grain being assembled takes writes in place (in
 * memory); a grain not yet written gets a plan with a buffer of its own,
 * which the core fills (the rest of the grain from the backing file or
 * zeroes) and the commit then stores.
 */
static int vmdk_map_write_stream(struct img *img, struct vmdk_extent *e,
				 uint64_t off, uint64_t len, struct img_map *m)
{
	uint64_t grain = off / e->grain_size, in = off % e->grain_size;
	struct img_plan *p;
	uint32_t gte;
	int ret;

	m->len = img_min(len, e->grain_size - in);
	if (m->write == IMG_MAP_WRITE_IN_PLACE) {
		m->flags = 0;
		return 0;
	}
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->file_off = in;
	if (e->wbuf_idx == grain) {
		m->io = &e->wbuf_io;
		return 0;
	}
	ret = vmdk_grain_unwritten(e, off, &gte);
	if (ret < 0)
		return ret;
	p = calloc(1, sizeof(*p));
	if (p)
		p->buf = calloc(1, e->grain_size);
	if (!p || !p->buf) {
		free(p);
		return img_error(-ENOMEM, "vmdk: out of memory");
	}
	p->e = e;
	p->grain0 = grain;
	p->n = 1;
	p->whole = m->len == e->grain_size;
	p->io.ops = &vmdk_plan_io_ops;
	p->io.path = e->file;
	m->plan = p;
	m->io = &p->io;
	m->region_off = grain * e->grain_size;
	m->region_len = vmdk_region_end(img, e, grain + 1) - m->region_off;
	return 0;
}

int vmdk_sparse_map_write(struct img *img, struct vmdk_extent *e, uint64_t off,
			  uint64_t len, struct img_map *m)
{
	if (e->compressed)
		return vmdk_map_write_stream(img, e, off, len, m);
	return vmdk_map_write_plain(img, e, off, len, m);
}

/* A compressed grain written into its plan's buffer. */
static int vmdk_commit_stream(struct img *img, struct img_plan *p)
{
	struct vmdk_extent *e = p->e;
	uint8_t *old;
	uint32_t gte;
	int ret;

	ret = vmdk_grain_unwritten(e, p->grain0 * e->grain_size, &gte);
	if (ret >= 0)
		ret = vmdk_put_wbuf(img, e);
	if (ret < 0)
		return ret;
	if (p->whole) {
		if (img_is_zero(p->buf, e->grain_size) && !img_has_backing(img))
			return 0;
		return vmdk_append_compressed(e, p->grain0, p->buf, true);
	}
	old = e->wbuf;
	e->wbuf = p->buf;
	p->buf = old;
	e->wbuf_idx = p->grain0;
	return 0;
}

int vmdk_sparse_commit(struct img *img, struct img_plan *p, int result)
{
	struct vmdk_extent *e = p->e;
	int ret = 0;

	/* A failed write leaks its grains: they may hold part of it. */
	if (result >= 0 && e->compressed)
		ret = vmdk_commit_stream(img, p);
	for (uint64_t k = 0; result >= 0 && !e->compressed && k < p->n; k++) {
		uint64_t grain = p->grain0 + k;
		uint32_t gte;

		ret = vmdk_gte(e, grain * e->grain_size, &gte);
		if (ret >= 0 && gte > 1)
			ret = img_error(
				-EIO,
				"vmdk: grain %" PRIu64
				" of '%s' was allocated under a write in flight",
				grain, e->file);
		if (ret >= 0)
			ret = vmdk_set_gte(
				e, grain,
				p->sector0 +
					(uint32_t)(k * e->h.grain_sectors));
		if (ret < 0)
			break;
	}
	vmdk_plan_free(p);
	return ret;
}

int vmdk_sparse_zero(struct img *img, struct vmdk_extent *e, uint64_t off,
		     uint64_t len, bool apply)
{
	while (len) {
		uint64_t n = img_min(len, e->grain_size - off % e->grain_size);
		uint64_t grain = off / e->grain_size;
		uint32_t gte;
		int ret;

		ret = vmdk_gte(e, off, &gte);
		if (ret < 0)
			return ret;
		if (n == e->grain_size && e->zero_grain && !e->compressed) {
			/* The data of an allocated grain is leaked. */
			if (apply) {
				ret = vmdk_set_gte(e, grain, 1);
				if (ret < 0)
					return ret;
			}
		} else if (gte || img_has_backing(img) ||
			   e->wbuf_idx == grain) {
			return img_error(-ENOTSUP,
					 "vmdk: grain %" PRIu64
					 " of '%s' needs zeroes written",
					 grain, e->file);
		}
		off += n;
		len -= n;
	}
	return 0;
}

static int vmdk_write_gt(struct vmdk_extent *e, uint32_t i, uint64_t off)
{
	uint64_t bytes = vmdk_gt_bytes(e);
	uint8_t *raw = calloc(1, img_align_up(bytes, VMDK_SECTOR));
	int ret;

	if (!raw)
		return img_error(-ENOMEM, "vmdk: out of memory");
	for (uint32_t k = 0; k < e->h.gtes_per_gt; k++)
		img_put_le32(raw + 4 * k, e->gts[i].e[k]);
	ret = img_io_pwrite(
		e->io, raw,
		e->at_end ? img_align_up(bytes, VMDK_SECTOR) : bytes, off);
	free(raw);
	return ret;
}

static int vmdk_marker(struct vmdk_extent *e, uint64_t val, uint32_t type,
		       uint64_t off)
{
	uint8_t m[VMDK_SECTOR];

	memset(m, 0, sizeof(m));
	img_put_le64(m, val);
	img_put_le32(m + 12, type);
	return img_io_pwrite(e->io, m, sizeof(m), off);
}

/* GT, GD, footer and end-of-stream markers after the last grain. */
static int vmdk_write_stream_tail(struct vmdk_extent *e)
{
	uint64_t gt_bytes = img_align_up(vmdk_gt_bytes(e), VMDK_SECTOR);
	uint64_t gd_bytes = img_align_up((uint64_t)e->n_gts * 4, VMDK_SECTOR);
	uint64_t pos = e->next_free, gd_pos;
	struct vmdk_sparse_hdr f = e->h;
	uint8_t hdr[VMDK_SECTOR];
	int ret;

	for (uint32_t i = 0; i < e->n_gts; i++) {
		bool used = false;

		e->gd[i] = 0;
		for (uint32_t k = 0; e->gts[i].e && k < e->h.gtes_per_gt; k++)
			used |= e->gts[i].e[k] != 0;
		if (!used)
			continue;
		ret = vmdk_marker(e, gt_bytes / VMDK_SECTOR, MARKER_GT, pos);
		if (ret >= 0)
			ret = vmdk_write_gt(e, i, pos + VMDK_SECTOR);
		if (ret < 0)
			return ret;
		e->gd[i] = (uint32_t)((pos + VMDK_SECTOR) / VMDK_SECTOR);
		pos += VMDK_SECTOR + gt_bytes;
	}
	ret = vmdk_marker(e, gd_bytes / VMDK_SECTOR, MARKER_GD, pos);
	if (ret < 0)
		return ret;
	gd_pos = pos + VMDK_SECTOR;
	ret = img_table32_write(e->io, e->gd, 0, e->n_gts, gd_pos, false);
	if (ret < 0)
		return ret;
	if (gd_bytes > (uint64_t)e->n_gts * 4) {
		ret = img_io_zero(e->io, gd_pos + (uint64_t)e->n_gts * 4,
				  gd_bytes - (uint64_t)e->n_gts * 4, 0);
		if (ret < 0)
			return ret;
	}
	pos = gd_pos + gd_bytes;
	f.gd_sector = gd_pos / VMDK_SECTOR;
	vmdk_hdr_encode(&f, hdr);
	ret = vmdk_marker(e, 1, MARKER_FOOTER, pos);
	if (ret >= 0)
		ret = img_io_pwrite(e->io, hdr, sizeof(hdr), pos + VMDK_SECTOR);
	if (ret >= 0)
		ret = vmdk_marker(e, 0, MARKER_EOS, pos + 2 * VMDK_SECTOR);
	if (ret >= 0)
		ret = img_io_truncate(e->io, pos + 3 * VMDK_SECTOR);
	return ret;
}

int vmdk_sparse_flush(struct img *img, struct vmdk_extent *e)
{
	int ret;

	ret = vmdk_put_wbuf(img, e);
	if (ret < 0)
		return ret;
	if (e->at_end) {
		if (!e->stream_dirty)
			return 0;
		ret = img_io_flush(e->io);
		if (ret >= 0)
			ret = vmdk_write_stream_tail(e);
		if (ret >= 0)
			e->stream_dirty = false;
		return ret;
	}
	ret = img_io_flush(e->io);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < e->n_gts; i++) {
		if (!e->gts[i].dirty)
			continue;
		ret = vmdk_write_gt(e, i, (uint64_t)e->gd[i] * VMDK_SECTOR);
		if (ret >= 0 && e->rgd && e->rgd[i])
			ret = vmdk_write_gt(e, i,
					    (uint64_t)e->rgd[i] * VMDK_SECTOR);
		if (ret < 0)
			return ret;
		e->gts[i].dirty = false;
	}
	if (e->gd_dirty) {
		ret = img_table32_write(e->io, e->gd, 0, e->n_gts,
					e->h.gd_sector * VMDK_SECTOR, false);
		if (ret >= 0 && e->rgd)
			ret = img_table32_write(e->io, e->rgd, 0, e->n_gts,
						e->h.rgd_sector * VMDK_SECTOR,
						false);
		if (ret < 0)
			return ret;
		e->gd_dirty = false;
	}
	e->stream_dirty = false;
	return 0;
}

/* The stream of the compressed grain whose marker (or data) is at sector
 * gte_s; its first byte is checked by the core. */
static int vmdk_map_compressed(struct vmdk_extent *e, uint64_t grain,
			       uint32_t gte_s, struct img_map *m)
{
	uint64_t off = (uint64_t)gte_s * VMDK_SECTOR, size;
	uint64_t cap = 2 * e->grain_size; /* as QEMU */
	uint64_t clen;
	uint8_t mk[12];
	int ret;

	ret = img_io_holds(e->io, off + 1, &size);
	if (ret < 0)
		return ret;
	if (!ret)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: compressed grain at sector %" PRIu32
				 " is past the end of '%s'",
				 gte_s, e->file);
	if (e->markers) {
		ret = img_io_pread(e->io, mk, sizeof(mk), off);
		if (ret < 0)
			return ret;
		clen = img_le32(mk + 8);
		off += sizeof(mk);
		ret = clen && clen <= cap ?
			      img_io_holds(e->io, off + clen, &size) :
			      0;
		if (ret < 0)
			return ret;
		if (!ret)
			return img_error(
				-IMG_ECORRUPT,
				"vmdk: compressed grain at sector %" PRIu32
				" has a bad size %" PRIu64,
				gte_s, clen);
	} else {
		clen = img_min(cap, vmdk_file_size(e) - off);
	}
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_COMPRESSED;
	m->io = e->io;
	m->file_off = off;
	m->codec = IMG_COMPRESS_DEFLATE_ZLIB;
	m->clen = clen;
	/* QEMU compresses only the guest bytes of a last, partial grain. */
	m->cluster_size =
		img_min(e->grain_size, e->len - grain * e->grain_size);
	return 0;
}

int vmdk_sparse_map(struct img *img, struct vmdk_extent *e, uint64_t off,
		    uint64_t len, struct img_map *m)
{
	uint64_t grain = off / e->grain_size, in = off % e->grain_size;
	uint64_t n = img_min(len, e->grain_size - in);
	uint32_t gte, next;
	int ret;

	m->len = n;
	if (e->wbuf_idx == grain) {
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->io = &e->wbuf_io;
		m->file_off = in;
		return 0;
	}
	ret = vmdk_gte(e, off, &gte);
	if (ret < 0)
		return ret;
	if (gte == 1 && !e->zero_grain)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: grain %" PRIu64
				 " of '%s' points at the header",
				 grain, e->file);
	if (gte > 1 && e->compressed) {
		m->in_cluster = in;
		return vmdk_map_compressed(e, grain, gte, m);
	}
	/* Merge following grains of the same kind (contiguous if data). */
	while (n < len) {
		ret = vmdk_gte(e, off + n, &next);
		if (ret < 0)
			return ret;
		if (e->wbuf_idx == (off + n) / e->grain_size)
			break;
		if (gte > 1 ? next != gte + (in + n) / VMDK_SECTOR :
			      next != gte)
			break;
		n = img_min(len, n + e->grain_size);
	}
	m->len = n;
	if (!gte) {
		m->flags = img_has_backing(img) ? 0 : IMG_EXT_ZERO;
	} else if (gte == 1) {
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
	} else {
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->io = e->io;
		m->file_off = (uint64_t)gte * VMDK_SECTOR + in;
	}
	return 0;
}

int vmdk_sparse_check(struct vmdk_extent *e, struct img_check *res)
{
	uint64_t file_size = img_align_up(vmdk_file_size(e), VMDK_SECTOR);
	uint64_t total = (e->len + e->grain_size - 1) / e->grain_size;

	res->total_clusters += total;
	for (uint32_t i = 0; i < e->n_gts; i++) {
		uint32_t *gt;
		int ret;

		ret = vmdk_gt(e, i, false, &gt);
		if (ret < 0) {
			img_check_corrupt(res, "ERROR %s", img_last_error());
			continue;
		}
		for (uint32_t k = 0; gt && k < e->h.gtes_per_gt; k++) {
			uint64_t s = gt[k];

			if (!s || (s == 1 && e->zero_grain))
				continue;
			res->allocated_clusters++;
			if (s * VMDK_SECTOR < e->h.overhead * VMDK_SECTOR ||
			    s * VMDK_SECTOR >= file_size)
				img_check_corrupt(
					res,
					"ERROR grain %" PRIu64
					" of '%s' at sector %" PRIu64
					" is outside the data area",
					(uint64_t)i * e->h.gtes_per_gt + k,
					e->file, s);
			if (e->compressed)
				res->compressed_clusters++;
		}
	}
	res->has_stats = true;
	return 0;
}

int vmdk_sparse_create(struct img_io *io, uint64_t capacity, bool stream,
		       bool zeroed_grain, const char *desc)
{
	struct vmdk_sparse_hdr h = {
		.capacity = (capacity + VMDK_SECTOR - 1) / VMDK_SECTOR,
		.grain_sectors = VMDK_DEFAULT_GRAIN_SECTORS,
		.desc_sector = 1,
		.desc_sectors = VMDK_DESC_SECTORS,
		.gtes_per_gt = VMDK_GTES,
	};
	uint64_t grains = (h.capacity + h.grain_sectors - 1) / h.grain_sectors;
	uint64_t gt_count = (grains + VMDK_GTES - 1) / VMDK_GTES;
	uint64_t gt_sectors = VMDK_GTES * 4 / VMDK_SECTOR;
	uint64_t gd_sectors = (gt_count * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
	uint8_t hdr[VMDK_SECTOR];
	uint32_t *gd;
	int ret;

	if (desc && strlen(desc) > VMDK_DESC_SECTORS * VMDK_SECTOR)
		return img_error(-EINVAL, "vmdk: descriptor too long");
	if (gt_count > UINT32_MAX / 4)
		return img_error(-EINVAL, "vmdk: size %" PRIu64 " is too large",
				 capacity);
	if (stream) {
		h.version = 3;
		h.flags = VMDK_FLAG_NL_DETECT | VMDK_FLAG_COMPRESS |
			  VMDK_FLAG_MARKER;
		h.gd_sector = VMDK_GD_AT_END;
		h.overhead = VMDK_DEFAULT_GRAIN_SECTORS;
		h.compress_algorithm = 1;
	} else {
		h.version = zeroed_grain ? 2 : 1;
		h.flags = VMDK_FLAG_NL_DETECT | VMDK_FLAG_RGD |
			  (zeroed_grain ? VMDK_FLAG_ZERO_GRAIN : 0);
		h.rgd_sector = h.desc_sector + h.desc_sectors;
		h.gd_sector = h.rgd_sector + gd_sectors + gt_sectors * gt_count;
		h.overhead = img_align_up(h.gd_sector + gd_sectors +
						  gt_sectors * gt_count,
					  h.grain_sectors);
	}
	if (h.overhead * VMDK_SECTOR / VMDK_SECTOR != h.overhead ||
	    h.gd_sector + gd_sectors + gt_sectors * gt_count > UINT32_MAX)
		return img_error(-EINVAL, "vmdk: size %" PRIu64 " is too large",
				 capacity);
	vmdk_hdr_encode(&h, hdr);
	ret = img_io_truncate(io, 0);
	if (ret >= 0)
		ret = img_io_pwrite(io, hdr, sizeof(hdr), 0);
	if (ret >= 0 && desc)
		ret = img_io_pwrite(io, desc, strlen(desc), VMDK_SECTOR);
	if (ret < 0)
		return ret;
	if (stream) {
		struct vmdk_extent e = { .io = io,
					 .h = h,
					 .n_gts = (uint32_t)gt_count };
		struct vmdk_gt none = { 0 };

		e.gd = calloc(gt_count ? gt_count : 1, 4);
		e.gts = gt_count ? calloc(gt_count, sizeof(none)) : &none;
		if (!e.gd || !e.gts) {
			free(e.gd);
			if (e.gts != &none)
				free(e.gts);
			return img_error(-ENOMEM, "vmdk: out of memory");
		}
		e.at_end = true;
		e.next_free = h.overhead * VMDK_SECTOR;
		ret = vmdk_write_stream_tail(&e);
		free(e.gd);
		if (e.gts != &none)
			free(e.gts);
		return ret;
	}
	ret = img_io_truncate(io, h.overhead * VMDK_SECTOR);
	if (ret < 0)
		return ret;
	gd = malloc(gt_count ? gt_count * 4 : 4);
	if (!gd)
		return img_error(-ENOMEM, "vmdk: out of memory");
	for (uint64_t i = 0; i < gt_count; i++)
		gd[i] = (uint32_t)(h.rgd_sector + gd_sectors + i * gt_sectors);
	ret = img_table32_write(io, gd, 0, (uint32_t)gt_count,
				h.rgd_sector * VMDK_SECTOR, false);
	for (uint64_t i = 0; i < gt_count; i++)
		gd[i] = (uint32_t)(h.gd_sector + gd_sectors + i * gt_sectors);
	if (ret >= 0)
		ret = img_table32_write(io, gd, 0, (uint32_t)gt_count,
					h.gd_sector * VMDK_SECTOR, false);
	free(gd);
	return ret;
}
