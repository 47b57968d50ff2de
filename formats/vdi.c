/* SPDX-License-Identifier: MIT */
/*
 * The VDI format (VirtualBox Disk Image, header version 1.1, as VirtualBox
 * and QEMU 7.2 write it): a 512-byte header, the block map (one 32-bit
 * little-endian entry per block: a block index in the data area, or
 * 0xffffffff unallocated, or 0xfffffffe discarded; both read as zeroes) and
 * the data area of 1 MiB blocks. Dynamic images allocate blocks at the end
 * on first write; static images map every block in order from creation.
 * Differencing (non-null parent or link UUID), undo and fixed-geometry-only
 * images and block sizes other than 1 MiB are refused, as QEMU does.
 *
 * Crash consistency: a new block's data is written first; the block map
 * entries and the header's allocated-block count are written at flush after
 * the data has been flushed, so a crash loses at worst unreferenced blocks
 * at the end of the file (open places new blocks after the furthest one).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-driver.h"

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC 2u
#define VDI_UNALLOCATED 0xffffffffu
#define VDI_DISCARDED 0xfffffffeu
#define VDI_BLOCK_SIZE (1u << 20)
#define VDI_HEADER_SIZE 512u
#define VDI_MAX_BLOCKS 0x3fffffffu /* QEMU's VDI_BLOCKS_IN_IMAGE_MAX */

/* Header fields (little endian offsets). */
#define V_TEXT 0x00
#define V_SIGNATURE 0x40
#define V_VERSION 0x44
#define V_HEADER_SIZE 0x48
#define V_TYPE 0x4c
#define V_FLAGS 0x50
#define V_OFFSET_BMAP 0x154
#define V_OFFSET_DATA 0x158
#define V_SECTOR_SIZE 0x168
#define V_DISK_SIZE 0x170
#define V_BLOCK_SIZE 0x178
#define V_BLOCK_EXTRA 0x17c
#define V_BLOCKS 0x180
#define V_BLOCKS_ALLOC 0x184
#define V_UUID_IMAGE 0x188
#define V_UUID_SNAP 0x198
#define V_UUID_LINK 0x1a8
#define V_UUID_PARENT 0x1b8

struct vdi {
	struct img *img;
	uint8_t header[VDI_HEADER_SIZE];
	uint32_t type;
	uint64_t size;
	uint64_t bmap_off;
	uint64_t data_off;
	uint32_t n_blocks;
	uint32_t *bmap; /* host endian */
	uint32_t next_block; /* index of the next new block */
	uint64_t file_end; /* bytes of data area in use, from data_off */
	uint32_t dirty_lo, dirty_hi;
	bool header_dirty;
};

static int vdi_probe(const uint8_t *buf, size_t len)
{
	return len >= V_SIGNATURE + 4 &&
			       img_le32(buf + V_SIGNATURE) == VDI_SIGNATURE ?
		       100 :
		       0;
}

static bool vdi_uuid_null(const uint8_t *u)
{
	return img_is_zero(u, 16);
}

static int vdi_parse(struct vdi *s, uint64_t file_size)
{
	const uint8_t *h = s->header;
	uint32_t version = img_le32(h + V_VERSION);
	uint32_t block_size = img_le32(h + V_BLOCK_SIZE);
	uint64_t bmap_bytes;

	if (img_le32(h + V_SIGNATURE) != VDI_SIGNATURE)
		return img_error(-IMG_ECORRUPT, "vdi: bad signature %#" PRIx32,
				 img_le32(h + V_SIGNATURE));
	if (version != VDI_VERSION_1_1)
		return img_error(-ENOTSUP, "vdi: unsupported version %u.%u",
				 version >> 16, version & 0xffff);
	s->type = img_le32(h + V_TYPE);
	if (s->type != VDI_TYPE_DYNAMIC && s->type != VDI_TYPE_STATIC)
		return img_error(-ENOTSUP,
				 "vdi: unsupported image type %" PRIu32,
				 s->type);
	if (img_le32(h + V_SECTOR_SIZE) != 512)
		return img_error(-ENOTSUP,
				 "vdi: unsupported sector size %" PRIu32,
				 img_le32(h + V_SECTOR_SIZE));
	if (block_size != VDI_BLOCK_SIZE)
		return img_error(-ENOTSUP,
				 "vdi: unsupported block size %" PRIu32
				 " (only 1 MiB)",
				 block_size);
	if (img_le32(h + V_BLOCK_EXTRA))
		return img_error(-ENOTSUP,
				 "vdi: unsupported block extra data %" PRIu32,
				 img_le32(h + V_BLOCK_EXTRA));
	if (!vdi_uuid_null(h + V_UUID_LINK) ||
	    !vdi_uuid_null(h + V_UUID_PARENT))
		return img_error(
			-ENOTSUP,
			"vdi: differencing images (non-null link or parent UUID) are not supported");
	s->bmap_off = img_le32(h + V_OFFSET_BMAP);
	s->data_off = img_le32(h + V_OFFSET_DATA);
	if (s->bmap_off % 512 || s->data_off % 512 ||
	    s->bmap_off < VDI_HEADER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "vdi: block map offset %#" PRIx64
				 " or data offset %#" PRIx64
				 " is unaligned or inside the header",
				 s->bmap_off, s->data_off);
	s->n_blocks = img_le32(h + V_BLOCKS);
	if (s->n_blocks > VDI_MAX_BLOCKS)
		return img_error(-IMG_ECORRUPT,
				 "vdi: %" PRIu32 " blocks is too many",
				 s->n_blocks);
	s->size = img_le64(h + V_DISK_SIZE);
	if (s->size > (uint64_t)s->n_blocks * VDI_BLOCK_SIZE || s->size % 512)
		return img_error(-IMG_ECORRUPT,
				 "vdi: disk size %" PRIu64
				 " does not fit %" PRIu32
				 " blocks or is not a multiple of 512",
				 s->size, s->n_blocks);
	bmap_bytes = (uint64_t)s->n_blocks * 4;
	if (s->data_off < s->bmap_off + bmap_bytes)
		return img_error(-IMG_ECORRUPT,
				 "vdi: data offset %#" PRIx64
				 " overlaps the block map at %#" PRIx64,
				 s->data_off, s->bmap_off);
	if (s->bmap_off + bmap_bytes > file_size)
		return img_error(-IMG_ECORRUPT,
				 "vdi: block map at %#" PRIx64
				 " is past the end of the file",
				 s->bmap_off);
	if (img_le32(h + V_BLOCKS_ALLOC) > s->n_blocks)
		return img_error(-IMG_ECORRUPT,
				 "vdi: %" PRIu32
				 " allocated blocks of %" PRIu32,
				 img_le32(h + V_BLOCKS_ALLOC), s->n_blocks);
	return 0;
}

static bool vdi_allocated(uint32_t e)
{
	return e != VDI_UNALLOCATED && e != VDI_DISCARDED;
}

static uint64_t vdi_block_off(const struct vdi *s, uint32_t e)
{
	return s->data_off + (uint64_t)e * VDI_BLOCK_SIZE;
}

static int vdi_open(struct img *img, unsigned flags)
{
	struct vdi *s = img_priv(img);
	struct img_io *io = img_file(img);
	uint64_t file_size;
	uint32_t used = 0;
	int ret;

	s->img = img;
	s->dirty_lo = UINT32_MAX;
	ret = img_io_size(io, &file_size);
	if (ret < 0)
		return ret;
	if (file_size < VDI_HEADER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "vdi: file of %" PRIu64
				 " bytes is too small for a header",
				 file_size);
	ret = img_io_pread(io, s->header, VDI_HEADER_SIZE, 0);
	if (ret < 0)
		return ret;
	ret = vdi_parse(s, file_size);
	if (ret < 0)
		return ret;
	ret = img_metadata_check(img, (uint64_t)s->n_blocks * 4, "a block map");
	if (ret < 0)
		return ret;
	s->bmap = malloc(s->n_blocks ? (size_t)s->n_blocks * 4 : 1);
	if (!s->bmap)
		return img_error(-ENOMEM,
				 "vdi: out of memory for the block map");
	ret = img_io_pread(io, s->bmap, (uint64_t)s->n_blocks * 4, s->bmap_off);
	if (ret < 0)
		goto fail;
	s->next_block = img_le32(s->header + V_BLOCKS_ALLOC);
	for (uint32_t i = 0; i < s->n_blocks; i++) {
		uint32_t e = img_le32(&s->bmap[i]);

		s->bmap[i] = e;
		if (e == VDI_UNALLOCATED || e == VDI_DISCARDED)
			continue;
		if (e >= s->n_blocks) {
			ret = img_error(-IMG_ECORRUPT,
					"vdi: block map entry %" PRIu32
					" points at block %" PRIu32
					" of %" PRIu32,
					i, e, s->n_blocks);
			goto fail;
		}
		if (e + 1 > s->next_block)
			s->next_block = e + 1;
		if (e + 1 > used)
			used = e + 1;
	}
	/* QEMU reads blocks past the end as zeroes; they are lost data.
	 * check (IMG_OPEN_NO_REPAIR) opens the image to report each one. */
	if (vdi_block_off(s, used) > file_size &&
	    !(flags & IMG_OPEN_NO_REPAIR)) {
		ret = img_error(-IMG_ECORRUPT,
				"vdi: block %" PRIu32 " ends at %" PRIu64
				", past the end of the file (size %" PRIu64
				"): the image has been truncated",
				used - 1, vdi_block_off(s, used), file_size);
		goto fail;
	}
	s->file_end = file_size > s->data_off ? file_size - s->data_off : 0;
	img_set_size(img, s->size);
	return 0;
fail:
	free(s->bmap);
	return ret;
}

static void vdi_close(struct img *img)
{
	struct vdi *s = img_priv(img);

	free(s->bmap);
}

static int vdi_alloc_block(struct vdi *s, uint32_t idx, bool full_write)
{
	uint64_t start, end;
	int ret;

	if (s->next_block >= s->n_blocks)
		return img_error(-IMG_ECORRUPT,
				 "vdi: no free block left (%" PRIu32
				 " of %" PRIu32 " in use)",
				 s->next_block, s->n_blocks);
	start = (uint64_t)s->next_block * VDI_BLOCK_SIZE;
	end = start + VDI_BLOCK_SIZE;
	/* Bytes left in the file from a lost allocation must read zero. */
	if (!full_write && s->file_end > start) {
		ret = img_io_zero(img_file(s->img), s->data_off + start,
				  img_min(s->file_end, end) - start, 0);
		if (ret < 0)
			return ret;
	}
	s->bmap[idx] = s->next_block++;
	if (idx < s->dirty_lo)
		s->dirty_lo = idx;
	if (idx + 1 > s->dirty_hi)
		s->dirty_hi = idx + 1;
	s->header_dirty = true;
	if (end > s->file_end)
		s->file_end = end;
	return 0;
}

static int vdi_write(struct img *img, const void *buf, uint64_t off,
		     uint64_t len, unsigned flags)
{
	struct vdi *s = img_priv(img);
	const uint8_t *p = buf;
	int ret;

	while (len) {
		uint32_t idx = (uint32_t)(off / VDI_BLOCK_SIZE);
		uint64_t in_block = off % VDI_BLOCK_SIZE;
		uint64_t n = img_min(len, VDI_BLOCK_SIZE - in_block);

		if (!vdi_allocated(s->bmap[idx])) {
			ret = vdi_alloc_block(s, idx, n == VDI_BLOCK_SIZE);
			if (ret < 0)
				return ret;
		}
		ret = img_io_pwrite(img_file(img), p, n,
				    vdi_block_off(s, s->bmap[idx]) + in_block);
		if (ret < 0)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return (flags & IMG_FUA) ? img_io_flush(img_file(img)) : 0;
}

static int vdi_flush(struct img *img)
{
	struct vdi *s = img_priv(img);
	struct img_io *io = img_file(img);
	uint64_t size;
	int ret;

	if (!s->header_dirty && s->dirty_lo >= s->dirty_hi)
		return img_io_flush(io);
	/* A partly written last block: the file still holds it whole. */
	ret = img_io_size(io, &size);
	if (ret >= 0 && size < s->data_off + s->file_end)
		ret = img_io_truncate(io, s->data_off + s->file_end);
	if (ret >= 0)
		ret = img_io_flush(io);
	if (ret < 0)
		return ret;
	if (s->dirty_lo < s->dirty_hi) {
		ret = img_table32_write(io, s->bmap, s->dirty_lo, s->dirty_hi,
					s->bmap_off, false);
		if (ret < 0)
			return ret;
		s->dirty_lo = UINT32_MAX;
		s->dirty_hi = 0;
	}
	if (s->header_dirty) {
		uint32_t n = 0;

		for (uint32_t i = 0; i < s->n_blocks; i++)
			n += vdi_allocated(s->bmap[i]);
		img_put_le32(s->header + V_BLOCKS_ALLOC, n);
		ret = img_io_pwrite(io, s->header, VDI_HEADER_SIZE, 0);
		if (ret < 0)
			return ret;
		s->header_dirty = false;
	}
	return img_io_flush(io);
}

/* Runs of unallocated blocks, or of blocks contiguous in the file. */
static int vdi_map(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m)
{
	struct vdi *s = img_priv(img);
	uint32_t idx = (uint32_t)(off / VDI_BLOCK_SIZE);
	uint64_t n = VDI_BLOCK_SIZE - off % VDI_BLOCK_SIZE;
	uint32_t e = s->bmap[idx];
	bool alloc = vdi_allocated(e);

	for (uint32_t i = idx + 1; i < s->n_blocks && n < len; i++) {
		if (vdi_allocated(s->bmap[i]) != alloc ||
		    (alloc && s->bmap[i] != e + (i - idx)))
			break;
		n += VDI_BLOCK_SIZE;
	}
	m->len = img_min(n, len);
	if (!alloc) {
		m->flags = IMG_EXT_ZERO;
		return 0;
	}
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->file_off = vdi_block_off(s, e) + off % VDI_BLOCK_SIZE;
	return 0;
}

static int vdi_info(struct img *img, struct img_info *info)
{
	info->cluster_size = VDI_BLOCK_SIZE;
	return 0;
}

/* Every allocated block index in range and used once. */
static int vdi_check(struct img *img, unsigned flags, struct img_check *res)
{
	struct vdi *s = img_priv(img);
	uint8_t *seen;
	uint64_t n = 0, file_size;
	int ret;

	ret = img_io_size(img_file(img), &file_size);
	if (ret < 0)
		return ret;
	seen = calloc(s->n_blocks / 8 + 1, 1);
	if (!seen)
		return img_error(-ENOMEM, "vdi: out of memory");
	for (uint32_t i = 0; i < s->n_blocks; i++) {
		uint32_t e = s->bmap[i];

		if (!vdi_allocated(e))
			continue;
		if (seen[e / 8] & (1u << (e % 8))) {
			img_check_corrupt(res,
					  "ERROR block %" PRIu32
					  " also uses data block %" PRIu32,
					  i, e);
		}
		seen[e / 8] |= (uint8_t)(1u << (e % 8));
		if (vdi_block_off(s, e + 1) > file_size) {
			img_check_corrupt(
				res,
				"ERROR block %" PRIu32 " at %#" PRIx64
				" ends past the end of the file (size %" PRIu64
				"): the image has been truncated",
				i, vdi_block_off(s, e), file_size);
		}
		n++;
	}
	free(seen);
	if (n != img_le32(s->header + V_BLOCKS_ALLOC) && !s->header_dirty) {
		res->corruptions++;
		if (res->report)
			res->report(
				res->opaque,
				"ERROR the header's allocated block count is wrong");
	}
	res->has_stats = true;
	res->total_clusters = s->n_blocks;
	res->allocated_clusters = n;
	res->image_end_offset =
		s->data_off + s->next_block * (uint64_t)VDI_BLOCK_SIZE;
	return 0;
}

static int vdi_create(const char *path, struct img_io *file,
		      const struct img_create_opts *opts)
{
	uint8_t h[VDI_HEADER_SIZE];
	bool is_static = false;
	uint64_t blocks, bmap_bytes, data_off;
	uint8_t *bmap;
	int ret;

	ret = img_opt_bool(opts, "static", &is_static);
	if (ret < 0)
		return ret;
	blocks = (opts->size + VDI_BLOCK_SIZE - 1) / VDI_BLOCK_SIZE;
	if (blocks > VDI_MAX_BLOCKS)
		return img_error(-EINVAL, "vdi: size %" PRIu64 " is too large",
				 opts->size);
	bmap_bytes = img_align_up(blocks * 4, 512);
	data_off = VDI_HEADER_SIZE + bmap_bytes;
	if (data_off > UINT32_MAX)
		return img_error(-EINVAL, "vdi: size %" PRIu64 " is too large",
				 opts->size);
	memset(h, 0, sizeof(h));
	strcpy((char *)h + V_TEXT, "<<< QEMU VM Virtual Disk Image >>>\n");
	img_put_le32(h + V_SIGNATURE, VDI_SIGNATURE);
	img_put_le32(h + V_VERSION, VDI_VERSION_1_1);
	img_put_le32(h + V_HEADER_SIZE, 0x180);
	img_put_le32(h + V_TYPE,
		     is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
	img_put_le32(h + V_OFFSET_BMAP, VDI_HEADER_SIZE);
	img_put_le32(h + V_OFFSET_DATA, (uint32_t)data_off);
	img_put_le32(h + V_SECTOR_SIZE, 512);
	img_put_le64(h + V_DISK_SIZE, opts->size);
	img_put_le32(h + V_BLOCK_SIZE, VDI_BLOCK_SIZE);
	img_put_le32(h + V_BLOCKS, (uint32_t)blocks);
	img_put_le32(h + V_BLOCKS_ALLOC, is_static ? (uint32_t)blocks : 0);
	ret = img_uuid_generate(h + V_UUID_IMAGE);
	if (ret >= 0)
		ret = img_uuid_generate(h + V_UUID_SNAP);
	if (ret < 0)
		return ret;
	bmap = malloc(bmap_bytes ? bmap_bytes : 1);
	if (!bmap)
		return img_error(-ENOMEM, "vdi: out of memory");
	memset(bmap, 0, bmap_bytes);
	for (uint64_t i = 0; i < blocks; i++)
		img_put_le32(bmap + 4 * i,
			     is_static ? (uint32_t)i : VDI_UNALLOCATED);
	ret = img_io_truncate(file, 0);
	if (ret >= 0)
		ret = img_io_pwrite(file, h, sizeof(h), 0);
	if (ret >= 0 && bmap_bytes)
		ret = img_io_pwrite(file, bmap, bmap_bytes, VDI_HEADER_SIZE);
	free(bmap);
	if (ret >= 0)
		ret = img_io_truncate(
			file,
			data_off + (is_static ? blocks * VDI_BLOCK_SIZE : 0));
	return ret;
}

static const struct img_opt_desc vdi_create_opts[] = {
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ "static", IMG_OPT_BOOL, "VDI static (pre-allocated) image", "off" },
	{ NULL, 0, NULL, NULL },
};

static const struct img_create_ops vdi_create_ops = {
	.create = vdi_create,
	.opts = vdi_create_opts,
};

const struct img_driver vdi_driver = {
	.name = "vdi",
	.priv_size = sizeof(struct vdi),
	.probe = vdi_probe,
	.open = vdi_open,
	.close = vdi_close,
	.write = vdi_write,
	.flush = vdi_flush,
	.map = vdi_map,
	.create = &vdi_create_ops,
	.info = vdi_info,
	.check = vdi_check,
};
