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
 * Writes are planned (struct img_map, lib/request.c moves the data): an
 * allocated run of blocks contiguous in the file is overwritten in place; a
 * run of unallocated blocks the write reaches gets as many new blocks at
 * the end of the data area, contiguous, reserved at map time (the file is
 * extended over them, so the part of a block the write leaves out reads as
 * zeroes), and vdi_commit enters them in the block map once their data is
 * written. QEMU allocates block number blocks_allocated next, so the blocks
 * in use must stay dense: a reservation whose write failed is handed back,
 * or kept for the next allocation when later ones are still in flight.
 *
 * Crash consistency: a new block's data is written first; the block map
 * entries and the header's allocated-block count are written at flush after
 * the data has been flushed, so a crash loses at worst unreferenced blocks
 * at the end of the file (open places new blocks after the furthest one,
 * and bytes such a block left behind are zeroed when its space is reused).
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
	/* Bytes of data area the file holds, from data_off: what lies there
	 * beyond the blocks in use is left over from a lost allocation. */
	uint64_t file_end;
	/* Blocks reserved for writes that failed, reused first (QEMU wants
	 * the blocks in use dense). */
	uint32_t *spare;
	uint32_t n_spare, spare_cap;
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
	free(s->spare);
}

static int vdi_flush(struct img *img)
{
	struct vdi *s = img_priv(img);
	struct img_io *io = img_file(img);
	int ret;

	if (!s->header_dirty && s->dirty_lo >= s->dirty_hi)
		return img_io_flush(io);
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

/* Whether block idx's run is allocated; *n: the bytes of [off, off + len)
 * in the run of unallocated blocks, or of blocks contiguous in the file,
 * that off starts. */
static bool vdi_run(const struct vdi *s, uint64_t off, uint64_t len,
		    uint64_t *n)
{
	uint32_t idx = (uint32_t)(off / VDI_BLOCK_SIZE);
	uint32_t e = s->bmap[idx];
	bool alloc = vdi_allocated(e);
	uint64_t run = VDI_BLOCK_SIZE - off % VDI_BLOCK_SIZE;

	for (uint32_t i = idx + 1; i < s->n_blocks && run < len; i++) {
		if (vdi_allocated(s->bmap[i]) != alloc ||
		    (alloc && s->bmap[i] != e + (i - idx)))
			break;
		run += VDI_BLOCK_SIZE;
	}
	*n = img_min(run, len);
	return alloc;
}

/* A planned write (struct img_map.plan): guest blocks idx.. get the n
 * blocks first.. of the data area, reserved for them. */
struct img_plan {
	uint32_t idx, first, n;
};

/* Zero what a lost allocation left in [from, to) of the data area. */
static int vdi_zero_stale(struct vdi *s, uint64_t from, uint64_t to)
{
	to = img_min(to, s->file_end);
	if (from >= to)
		return 0;
	return img_io_zero(img_file(s->img), s->data_off + from, to - from, 0);
}

/*
 * Reserve blocks for the len bytes at off, all in unallocated blocks: a
 * spare block, else as many blocks from next_block as the write reaches.
 * The file is extended over them and leftovers of a lost allocation
 * around the write zeroed, so that the blocks read as zeroes but for the
 * data the core writes.
 */
static int vdi_plan(struct vdi *s, uint64_t off, uint64_t len,
		    struct img_map *m)
{
	uint32_t idx = (uint32_t)(off / VDI_BLOCK_SIZE);
	uint64_t in_block = off % VDI_BLOCK_SIZE, start, end;
	uint32_t first, n;
	struct img_plan *plan;
	int ret;

	if (s->n_spare) {
		first = s->spare[s->n_spare - 1];
		n = 1;
	} else {
		if (s->next_block >= s->n_blocks)
			return img_error(-IMG_ECORRUPT,
					 "vdi: no free block left (%" PRIu32
					 " of %" PRIu32 " in use)",
					 s->next_block, s->n_blocks);
		first = s->next_block;
		n = (uint32_t)img_min(s->n_blocks - s->next_block,
				      (in_block + len + VDI_BLOCK_SIZE - 1) /
					      VDI_BLOCK_SIZE);
	}
	len = img_min(len, (uint64_t)n * VDI_BLOCK_SIZE - in_block);
	start = (uint64_t)first * VDI_BLOCK_SIZE;
	end = start + (uint64_t)n * VDI_BLOCK_SIZE;
	ret = vdi_zero_stale(s, start, start + in_block);
	if (ret >= 0)
		ret = vdi_zero_stale(s, start + in_block + len, end);
	if (ret >= 0 && end > s->file_end) {
		ret = img_io_truncate(img_file(s->img), s->data_off + end);
		if (ret >= 0)
			s->file_end = end;
	}
	if (ret < 0)
		return ret;
	plan = malloc(sizeof(*plan));
	if (!plan)
		return img_error(-ENOMEM, "vdi: out of memory");
	*plan = (struct img_plan){ .idx = idx, .first = first, .n = n };
	if (s->n_spare)
		s->n_spare--;
	else
		s->next_block += n;
	m->len = len;
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->file_off = vdi_block_off(s, first) + in_block;
	m->plan = plan;
	m->lock_off = (uint64_t)idx * VDI_BLOCK_SIZE;
	m->lock_len = (uint64_t)n * VDI_BLOCK_SIZE;
	return 0;
}

/*
 * Runs of unallocated blocks (zeroes), or of blocks contiguous in the file.
 * For a write, an allocated run is overwritten in place and an unallocated
 * one planned (vdi_plan).
 */
static int vdi_map(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m)
{
	struct vdi *s = img_priv(img);
	uint32_t idx = (uint32_t)(off / VDI_BLOCK_SIZE);

	if (vdi_run(s, off, len, &m->len)) {
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->file_off =
			vdi_block_off(s, s->bmap[idx]) + off % VDI_BLOCK_SIZE;
		return 0;
	}
	switch (m->write) {
	case IMG_MAP_NO_WRITE:
		m->flags = IMG_EXT_ZERO;
		return 0;
	case IMG_MAP_WRITE_IN_PLACE:
		m->flags = 0;
		return 0;
	case IMG_MAP_WRITE:
		break;
	}
	return vdi_plan(s, off, m->len, m);
}

/* Give reserved blocks back: to the end of the data area when they are
 * the last ones reserved, else to the spares. */
static void vdi_release(struct vdi *s, const struct img_plan *plan)
{
	if (plan->first + plan->n == s->next_block) {
		s->next_block = plan->first;
		return;
	}
	for (uint32_t i = 0; i < plan->n; i++) {
		if (s->n_spare == s->spare_cap) {
			uint32_t cap = s->spare_cap ? 2 * s->spare_cap : 8;
			uint32_t *p = realloc(s->spare, cap * sizeof(*p));

			/* Without memory the blocks stay unused. */
			if (!p)
				return;
			s->spare = p;
			s->spare_cap = cap;
		}
		s->spare[s->n_spare++] = plan->first + i;
	}
}

/* Enter a planned write's blocks in the block map (written at flush, after
 * their data), or give them back. */
static int vdi_commit(struct img *img, struct img_plan *plan, int result)
{
	struct vdi *s = img_priv(img);

	if (result < 0) {
		vdi_release(s, plan);
		free(plan);
		return 0;
	}
	for (uint32_t i = 0; i < plan->n; i++)
		s->bmap[plan->idx + i] = plan->first + i;
	if (plan->idx < s->dirty_lo)
		s->dirty_lo = plan->idx;
	if (plan->idx + plan->n > s->dirty_hi)
		s->dirty_hi = plan->idx + plan->n;
	s->header_dirty = true;
	free(plan);
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
	.flush = vdi_flush,
	.map = vdi_map,
	.commit = vdi_commit,
	.create = &vdi_create_ops,
	.info = vdi_info,
	.check = vdi_check,
};
