/* SPDX-License-Identifier: MIT */
/*
 * The VHD format ("vpc", Virtual Hard Disk Image Format Specification 1.0):
 * fixed disks (the guest data, then a 512-byte footer), dynamic disks (a
 * footer copy at 0, the dynamic disk header, the BAT, then blocks of a
 * sector bitmap followed by block_size bytes of data, and the footer at the
 * end) and differencing disks (dynamic disks whose clear bitmap bits read
 * from the parent, found through the parent locators: W2ru, W2ku, MacX, then
 * the parent's Unicode name; the parent is always opened as vpc).
 *
 * Virtual size: as QEMU 7.2, the CHS geometry gives the size unless the
 * creator is Hyper-V-like ("win ", "qem2", "d2v ", "CTXS", "tap") or the
 * geometry is the maximum 65535/16/255; then the footer's current size does.
 * New images get a geometry from the specification's algorithm and, without
 * force_size, a size rounded up to it (as qemu-img; differencing disks keep
 * their parent's exact size). Bitmaps of dynamic
 * disks are written all-ones and ignored on reads (as QEMU does); those of
 * differencing disks are honoured and maintained sector by sector.
 *
 * Writes are planned (struct img_map, lib/request.c moves the data): data
 * in an allocated block (on a differencing disk, in present sectors) is
 * overwritten in place; a write into an unallocated block reserves a new
 * block at the end of the used area at map time (the file extended over
 * it), and vhd_commit enters it in the BAT once the data is written. On a
 * differencing disk the plan also sets the present bits of the sectors
 * written, whose partial edges the core completes from the parent.
 *
 * Crash consistency: a new block is placed at the end of the used area and
 * its data written first; the BAT entries, the differencing bitmaps and the
 * footer at the new end of file are written at flush, after the data has
 * been flushed. A crash before that leaves an unreferenced block at the end
 * (the footer copy at offset 0 still describes the image); a new block
 * placed over it zeroes what it left around the data written.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "img-driver.h"

#define VHD_SECTOR 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_HEADER_SIZE 1024u
#define VHD_TYPE_FIXED 2u
#define VHD_TYPE_DYNAMIC 3u
#define VHD_TYPE_DIFF 4u
#define VHD_UNALLOCATED 0xffffffffu
#define VHD_DEFAULT_BLOCK (2u << 20)
#define VHD_MAX_BLOCK (256u << 20)
#define VHD_MAX_GEOMETRY (65535ull * 16 * 255)
#define VHD_MAX_SECTORS 0xff000000ull /* 2040 GiB, QEMU's limit */
#define VHD_EPOCH 946684800 /* 2000-01-01 00:00:00 UTC */
#define VHD_N_LOCATORS 8
#define VHD_MAX_LOCATOR (64u << 10)

/* Footer fields (offsets into the 512-byte footer, big endian). */
#define F_COOKIE 0 /* "conectix" */
#define F_FEATURES 8
#define F_VERSION 12
#define F_DATA_OFFSET 16
#define F_TIMESTAMP 24
#define F_CREATOR_APP 28
#define F_CREATOR_VER 32
#define F_CREATOR_OS 36
#define F_ORIG_SIZE 40
#define F_CUR_SIZE 48
#define F_CYLS 56
#define F_HEADS 58
#define F_SPT 59
#define F_TYPE 60
#define F_CHECKSUM 64
#define F_UUID 68

/* Dynamic disk header fields. */
#define H_COOKIE 0 /* "cxsparse" */
#define H_DATA_OFFSET 8
#define H_TABLE_OFFSET 16
#define H_VERSION 24
#define H_MAX_ENTRIES 28
#define H_BLOCK_SIZE 32
#define H_CHECKSUM 36
#define H_PARENT_UUID 40
#define H_PARENT_TIME 56
#define H_PARENT_NAME 64 /* 512 bytes of UTF-16BE */
#define H_LOCATORS 576 /* 8 entries of 24 bytes */

struct vhd {
	struct img *img;
	uint8_t footer[VHD_FOOTER_SIZE];
	uint8_t header[VHD_HEADER_SIZE];
	uint32_t type;
	uint64_t size;
	uint64_t footer_off; /* fixed: where the footer lives */
	uint64_t bat_off;
	uint32_t n_entries; /* BAT entries the virtual size needs */
	uint32_t *bat; /* host endian, in sectors */
	uint32_t dirty_lo, dirty_hi; /* dirty BAT range [lo, hi) */
	uint32_t block_size;
	uint32_t bitmap_size; /* bytes, a multiple of 512 */
	uint64_t next_free; /* host offset of the next new block */
	uint64_t file_end; /* bytes the file holds (ours, not the footer) */
	bool footer_dirty; /* the end moved: rewrite the trailing footer */
	struct img_cache *bitmaps; /* differencing only */
	char *parent;
};

static uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t skip)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < skip || i >= skip + 4)
			sum += buf[i];
	return ~sum;
}

static int vhd_probe(const uint8_t *buf, size_t len)
{
	return len >= 8 && !memcmp(buf, "conectix", 8) ? 100 : 0;
}

/* The specification's CHS algorithm (QEMU's calculate_geometry). */
static void vhd_geometry(uint64_t sectors, uint16_t *cyls, uint8_t *heads,
			 uint8_t *spt)
{
	uint64_t cth;

	sectors = img_min(sectors, VHD_MAX_GEOMETRY);
	if (sectors >= 65535ull * 16 * 63) {
		*spt = 255;
		*heads = 16;
		cth = sectors / 255;
	} else {
		*spt = 17;
		cth = sectors / 17;
		*heads = (uint8_t)img_min((cth + 1023) / 1024, 255);
		if (*heads < 4)
			*heads = 4;
		if (cth >= (uint64_t)*heads * 1024 || *heads > 16) {
			*spt = 31;
			*heads = 16;
			cth = sectors / 31;
		}
		if (cth >= (uint64_t)*heads * 1024) {
			*spt = 63;
			*heads = 16;
			cth = sectors / 63;
		}
	}
	*cyls = (uint16_t)img_min(cth / *heads, 65535);
}

static bool vhd_uses_current_size(const uint8_t *f)
{
	static const char *const apps[] = { "win ", "qem2", "d2v ", "CTXS" };
	uint64_t chs = (uint64_t)img_be16(f + F_CYLS) * f[F_HEADS] * f[F_SPT];

	for (size_t i = 0; i < IMG_ARRAY_SIZE(apps); i++)
		if (!memcmp(f + F_CREATOR_APP, apps[i], 4))
			return true;
	return !memcmp(f + F_CREATOR_APP, "tap", 4) || chs == VHD_MAX_GEOMETRY;
}

/* Read and check the footer: the copy at 0 first (dynamic), else the end. */
static int vhd_read_footer(struct vhd *s, uint64_t file_size)
{
	struct img_io *io = img_file(s->img);
	uint8_t *f = s->footer;
	int ret;

	if (file_size < VHD_FOOTER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "vpc: file of %" PRIu64
				 " bytes is too small for a footer",
				 file_size);
	ret = img_io_pread(io, f, VHD_FOOTER_SIZE, 0);
	if (ret < 0)
		return ret;
	s->footer_off = file_size - VHD_FOOTER_SIZE;
	if (memcmp(f, "conectix", 8)) {
		ret = img_io_pread(io, f, VHD_FOOTER_SIZE, s->footer_off);
		if (ret < 0)
			return ret;
		if (memcmp(f, "conectix", 8))
			return img_error(
				-IMG_ECORRUPT,
				"vpc: no 'conectix' footer at 0 or %" PRIu64,
				s->footer_off);
	}
	if (img_be32(f + F_CHECKSUM) !=
	    vhd_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM))
		return img_error(-IMG_ECORRUPT,
				 "vpc: footer checksum %#" PRIx32
				 " does not match %#" PRIx32,
				 img_be32(f + F_CHECKSUM),
				 vhd_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM));
	s->type = img_be32(f + F_TYPE);
	if (s->type != VHD_TYPE_FIXED && s->type != VHD_TYPE_DYNAMIC &&
	    s->type != VHD_TYPE_DIFF)
		return img_error(-ENOTSUP,
				 "vpc: unsupported disk type %" PRIu32,
				 s->type);
	if (vhd_uses_current_size(f))
		s->size = img_be64(f + F_CUR_SIZE);
	else
		s->size = (uint64_t)img_be16(f + F_CYLS) * f[F_HEADS] *
			  f[F_SPT] * VHD_SECTOR;
	if (s->size % VHD_SECTOR || s->size > VHD_MAX_SECTORS * VHD_SECTOR)
		return img_error(-IMG_ECORRUPT,
				 "vpc: disk size %" PRIu64
				 " is not a multiple of 512 or above 2040 GiB",
				 s->size);
	if (s->type == VHD_TYPE_FIXED && s->size > s->footer_off)
		return img_error(-IMG_ECORRUPT,
				 "vpc: fixed disk of %" PRIu64
				 " bytes in a file of %" PRIu64 " bytes",
				 s->size, file_size);
	return 0;
}

/* Pick a parent locator whose file exists (else the first one usable). */
static int vhd_read_parent(struct vhd *s, uint64_t file_size)
{
	struct img_io *io = img_file(s->img);
	char *first = NULL;
	int ret;

	for (unsigned pass = 0; pass < 4; pass++) {
		static const char codes[4][5] = { "W2ru", "W2ku", "MacX", "" };

		for (unsigned i = 0; i < VHD_N_LOCATORS; i++) {
			const uint8_t *e = s->header + H_LOCATORS + 24 * i;
			uint32_t len = img_be32(e + 8);
			uint64_t off = img_be64(e + 16);
			uint8_t *raw;
			char *name = NULL, *path;

			if (pass == 3 || memcmp(e, codes[pass], 4))
				continue;
			if (!len || len > VHD_MAX_LOCATOR || off > file_size ||
			    len > file_size - off)
				return img_error(
					-IMG_ECORRUPT,
					"vpc: parent locator %u (%" PRIu32
					" bytes at %" PRIu64
					") is outside the file",
					i, len, off);
			raw = malloc(len);
			if (!raw)
				return img_error(-ENOMEM, "vpc: out of memory");
			ret = img_io_pread(io, raw, len, off);
			if (ret >= 0 && pass == 2) {
				name = strndup((char *)raw, len);
				if (!name)
					ret = img_error(-ENOMEM,
							"vpc: out of memory");
			} else if (ret >= 0) {
				ret = img_utf16_to_utf8(raw, len, false, &name);
			}
			free(raw);
			if (ret < 0) {
				char why[256];

				snprintf(why, sizeof(why), "%s",
					 img_last_error());
				return img_error(ret,
						 "vpc: parent locator %u: %s",
						 i, why);
			}
			if (pass == 2 && !strncmp(name, "file://", 7))
				memmove(name, name + 7, strlen(name + 7) + 1);
			for (char *c = name; *c; c++)
				if (*c == '\\')
					*c = '/';
			if (pass == 0 && !strncmp(name, "./", 2))
				memmove(name, name + 2, strlen(name + 2) + 1);
			if (!*name) {
				free(name);
				continue;
			}
			ret = img_path_relative(img_filename(s->img), name,
						&path);
			if (ret < 0) {
				free(name);
				return ret;
			}
			/* An untrusted image is refused for naming a parent
			 * at all: do not tell it which host files exist. */
			ret = img_untrusted(s->img) ? 0 : access(path, F_OK);
			free(path);
			if (!ret) {
				free(first);
				s->parent = name;
				return 0;
			}
			if (!first)
				first = name;
			else
				free(name);
		}
	}
	if (!first) {
		ret = img_utf16_to_utf8(s->header + H_PARENT_NAME, 512, true,
					&first);
		if (ret < 0)
			return ret;
		if (!*first) {
			free(first);
			return img_error(
				-IMG_ECORRUPT,
				"vpc: differencing disk names no parent");
		}
	}
	s->parent = first;
	return 0;
}

static int vhd_open_dynamic(struct vhd *s, uint64_t file_size)
{
	struct img_io *io = img_file(s->img);
	uint8_t *h = s->header;
	uint64_t hdr_off = img_be64(s->footer + F_DATA_OFFSET);
	uint64_t max_entries, need, bat_bytes;
	int ret;

	if (hdr_off > file_size || file_size - hdr_off < VHD_HEADER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "vpc: dynamic header offset %#" PRIx64
				 " is outside the file",
				 hdr_off);
	ret = img_io_pread(io, h, VHD_HEADER_SIZE, hdr_off);
	if (ret < 0)
		return ret;
	if (memcmp(h, "cxsparse", 8))
		return img_error(-IMG_ECORRUPT,
				 "vpc: no 'cxsparse' header at %#" PRIx64,
				 hdr_off);
	if (img_be32(h + H_CHECKSUM) !=
	    vhd_checksum(h, VHD_HEADER_SIZE, H_CHECKSUM))
		return img_error(-IMG_ECORRUPT,
				 "vpc: dynamic header checksum %#" PRIx32
				 " does not match",
				 img_be32(h + H_CHECKSUM));
	s->block_size = img_be32(h + H_BLOCK_SIZE);
	if (!img_is_pow2(s->block_size) || s->block_size < VHD_SECTOR ||
	    s->block_size > VHD_MAX_BLOCK)
		return img_error(-IMG_ECORRUPT,
				 "vpc: block size %" PRIu32
				 " is not a power of two in 512..256M",
				 s->block_size);
	s->bitmap_size =
		(uint32_t)img_align_up(s->block_size / VHD_SECTOR / 8 ?
					       s->block_size / VHD_SECTOR / 8 :
					       1,
				       VHD_SECTOR);
	max_entries = img_be32(h + H_MAX_ENTRIES);
	need = (s->size + s->block_size - 1) / s->block_size;
	if (max_entries < need)
		return img_error(-IMG_ECORRUPT,
				 "vpc: BAT of %" PRIu64
				 " entries cannot map %" PRIu64 " bytes",
				 max_entries, s->size);
	s->n_entries = (uint32_t)need;
	s->bat_off = img_be64(h + H_TABLE_OFFSET);
	bat_bytes = need * 4;
	if (s->bat_off % VHD_SECTOR || s->bat_off > file_size ||
	    bat_bytes > file_size - s->bat_off)
		return img_error(-IMG_ECORRUPT,
				 "vpc: BAT at %#" PRIx64 " (%" PRIu64
				 " entries) is outside the file or unaligned",
				 s->bat_off, need);
	ret = img_metadata_check(s->img, bat_bytes, "a BAT");
	if (ret < 0)
		return ret;
	s->bat = malloc(bat_bytes ? bat_bytes : 1);
	if (!s->bat)
		return img_error(-ENOMEM, "vpc: out of memory for the BAT");
	ret = img_io_pread(io, s->bat, bat_bytes, s->bat_off);
	if (ret < 0)
		return ret;
	s->next_free = img_align_up(s->bat_off + max_entries * 4, VHD_SECTOR);
	if (s->next_free < hdr_off + VHD_HEADER_SIZE)
		s->next_free = hdr_off + VHD_HEADER_SIZE;
	for (uint32_t i = 0; i < s->n_entries; i++) {
		uint64_t off, end;

		s->bat[i] = img_be32(&s->bat[i]);
		if (s->bat[i] == VHD_UNALLOCATED)
			continue;
		off = (uint64_t)s->bat[i] * VHD_SECTOR;
		end = off + s->bitmap_size + s->block_size;
		if (off < VHD_FOOTER_SIZE)
			return img_error(-IMG_ECORRUPT,
					 "vpc: BAT entry %" PRIu32
					 " points at sector %" PRIu32,
					 i, s->bat[i]);
		if (end > s->next_free)
			s->next_free = end;
	}
	/* As QEMU: blocks past the end are lost data, not zeroes. check
	 * (IMG_OPEN_NO_REPAIR) opens it to report each one. */
	if (s->next_free > file_size &&
	    !(img_open_flags(s->img) & IMG_OPEN_NO_REPAIR))
		return img_error(-IMG_ECORRUPT,
				 "vpc: the BAT and blocks end at %" PRIu64
				 ", past the end of the file (size %" PRIu64
				 "): the image has been truncated",
				 s->next_free, file_size);
	if (s->type == VHD_TYPE_DIFF) {
		for (unsigned i = 0; i < VHD_N_LOCATORS; i++) {
			const uint8_t *e = s->header + H_LOCATORS + 24 * i;
			uint64_t off = img_be64(e + 16);
			uint64_t len = img_be32(e + 8);

			if (img_be32(e) && len && off <= file_size &&
			    off + len > s->next_free)
				s->next_free =
					img_align_up(off + len, VHD_SECTOR);
		}
		ret = vhd_read_parent(s, file_size);
		if (ret < 0)
			return ret;
		ret = img_set_backing_name(s->img, s->parent, "vpc");
		if (ret < 0)
			return ret;
		ret = img_cache_new(io, s->bitmap_size, 64, &s->bitmaps);
		if (ret < 0)
			return ret;
	}
	s->file_end = s->next_free;
	return 0;
}

static void vhd_close(struct img *img)
{
	struct vhd *s = img_priv(img);

	img_cache_free(s->bitmaps);
	free(s->bat);
	free(s->parent);
}

static int vhd_open(struct img *img, unsigned flags)
{
	struct vhd *s = img_priv(img);
	uint64_t file_size;
	int ret;

	s->img = img;
	s->dirty_lo = UINT32_MAX;
	ret = img_io_size(img_file(img), &file_size);
	if (ret < 0)
		return ret;
	ret = vhd_read_footer(s, file_size);
	if (ret >= 0 && s->type != VHD_TYPE_FIXED)
		ret = vhd_open_dynamic(s, file_size);
	if (ret < 0) {
		vhd_close(img);
		return ret;
	}
	img_set_size(img, s->size);
	return 0;
}

static bool bit_is_set(const uint8_t *bm, uint64_t i)
{
	return bm[i / 8] & (0x80u >> (i % 8));
}

/* A planned write (struct img_map.plan): block idx gets the new block at
 * host offset block_off (new_block), and on a differencing disk the
 * sectors of [in_block, in_block + len) become present. */
struct img_plan {
	uint32_t idx;
	bool new_block;
	uint64_t block_off;
	uint64_t in_block, len;
};

/*
 * Reserve a block at the end of the used area for the len bytes at
 * in_block of a write, and extend the file over it so that the bytes the
 * write leaves out read as zeroes. Bytes the file already holds there (an
 * old footer, a lost allocation) are zeroed around the write on a dynamic
 * disk, whose bitmap (all ones: QEMU ignores it) is written now; on a
 * differencing disk sectors are present only once written.
 */
static int vhd_reserve(struct vhd *s, uint64_t in_block, uint64_t len,
		       uint64_t *block_off)
{
	struct img_io *io = img_file(s->img);
	uint64_t file_off = s->next_free;
	uint64_t data_off = file_off + s->bitmap_size;
	uint64_t end = data_off + s->block_size, size;
	uint8_t *bm;
	int ret;

	if (file_off / VHD_SECTOR > UINT32_MAX - 1 || end > (uint64_t)INT64_MAX)
		return img_error(-ENOSPC,
				 "vpc: the file is full (%" PRIu64 " bytes)",
				 file_off);
	ret = img_io_size(io, &size);
	if (ret < 0)
		return ret;
	if (s->type == VHD_TYPE_DYNAMIC) {
		uint64_t stale = img_min(size, end), from = data_off + in_block;

		if (stale > data_off)
			ret = img_io_zero(io, data_off,
					  img_min(stale, from) - data_off, 0);
		if (ret >= 0 && stale > from + len)
			ret = img_io_zero(io, from + len, stale - from - len,
					  0);
		if (ret < 0)
			return ret;
		bm = malloc(s->bitmap_size);
		if (!bm)
			return img_error(-ENOMEM, "vpc: out of memory");
		memset(bm, 0xff, s->bitmap_size);
		ret = img_io_pwrite(io, bm, s->bitmap_size, file_off);
		free(bm);
		if (ret < 0)
			return ret;
	}
	if (size < end) {
		ret = img_io_truncate(io, end);
		if (ret < 0)
			return ret;
	}
	s->next_free = end;
	if (end > s->file_end) {
		s->file_end = end;
		s->footer_dirty = true;
	}
	*block_off = file_off;
	return 0;
}

/* Whether the sector of a differencing block holding in_block is present;
 * *len is cut to the run of sectors in the same state. */
static int vhd_present_run(struct vhd *s, uint64_t block_off, uint64_t in_block,
			   uint64_t *len, bool *present)
{
	uint64_t sec = in_block / VHD_SECTOR, n;
	uint8_t *bm;
	int ret;

	ret = img_cache_get(s->bitmaps, block_off, (void **)&bm);
	if (ret < 0)
		return ret;
	*present = bit_is_set(bm, sec);
	n = (sec + 1) * VHD_SECTOR - in_block;
	for (uint64_t i = sec + 1; i < s->block_size / VHD_SECTOR && n < *len &&
				   bit_is_set(bm, i) == *present;
	     i++)
		n += VHD_SECTOR;
	img_cache_put(s->bitmaps, bm);
	*len = img_min(*len, n);
	return 0;
}

/*
 * .map for a write, within one block: in place where the block is there
 * (on a differencing disk, a run of present sectors); otherwise a plan: a
 * new block, or present bits to set on a differencing disk, whose partial
 * sectors the core completes with what the disk reads there now.
 */
static int vhd_map_write(struct vhd *s, uint64_t off, uint64_t len,
			 struct img_map *m)
{
	uint32_t idx = (uint32_t)(off / s->block_size);
	uint64_t in_block = off % s->block_size;
	uint64_t block_off = (uint64_t)s->bat[idx] * VHD_SECTOR, a;
	bool new_block = s->bat[idx] == VHD_UNALLOCATED, present = true;
	struct img_plan *plan;
	int ret;

	m->len = img_min(len, s->block_size - in_block);
	if (!new_block && s->type == VHD_TYPE_DIFF) {
		ret = vhd_present_run(s, block_off, in_block, &m->len,
				      &present);
		if (ret < 0)
			return ret;
	}
	if (new_block || !present) {
		if (m->write == IMG_MAP_WRITE_IN_PLACE) {
			m->flags = 0;
			return 0;
		}
		plan = malloc(sizeof(*plan));
		if (!plan)
			return img_error(-ENOMEM, "vpc: out of memory");
		ret = new_block ? vhd_reserve(s, in_block, m->len, &block_off) :
				  0;
		if (ret < 0) {
			free(plan);
			return ret;
		}
		*plan = (struct img_plan){ .idx = idx,
					   .new_block = new_block,
					   .block_off = block_off,
					   .in_block = in_block,
					   .len = m->len };
		m->plan = plan;
		if (s->type == VHD_TYPE_DIFF) {
			a = in_block / VHD_SECTOR * VHD_SECTOR;
			m->region_off = off - (in_block - a);
			m->region_len =
				img_align_up(in_block + m->len, VHD_SECTOR) - a;
		}
		if (new_block) {
			m->lock_off = off - in_block;
			m->lock_len = s->block_size;
		}
	}
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->file_off = block_off + s->bitmap_size + in_block;
	return 0;
}

/* Make the tables name a planned write's data (the BAT and differencing
 * bitmaps are written at flush, after the data), or give a new block back
 * when it is the last one reserved (else its space stays unused). */
static int vhd_commit(struct img *img, struct img_plan *plan, int result)
{
	struct vhd *s = img_priv(img);
	uint8_t *bm;

	if (result >= 0 && s->type == VHD_TYPE_DIFF) {
		uint64_t first = plan->in_block / VHD_SECTOR;
		uint64_t last = (plan->in_block + plan->len - 1) / VHD_SECTOR;

		result = plan->new_block ?
				 img_cache_get_empty(s->bitmaps,
						     plan->block_off,
						     (void **)&bm) :
				 img_cache_get(s->bitmaps, plan->block_off,
					       (void **)&bm);
		if (result >= 0) {
			for (uint64_t i = first; i <= last; i++)
				bm[i / 8] |= (uint8_t)(0x80u >> (i % 8));
			img_cache_mark_dirty(s->bitmaps, bm);
			img_cache_put(s->bitmaps, bm);
		}
	}
	if (result < 0) {
		if (plan->new_block && s->next_free == plan->block_off +
							       s->bitmap_size +
							       s->block_size)
			s->next_free = plan->block_off;
		free(plan);
		return result;
	}
	if (plan->new_block) {
		s->bat[plan->idx] = (uint32_t)(plan->block_off / VHD_SECTOR);
		if (plan->idx < s->dirty_lo)
			s->dirty_lo = plan->idx;
		if (plan->idx + 1 > s->dirty_hi)
			s->dirty_hi = plan->idx + 1;
	}
	free(plan);
	return 0;
}

/*
 * A fixed disk is the file; a dynamic disk maps block by block (the bitmap
 * in front of each block breaks host contiguity), runs of unallocated
 * blocks merged; a differencing disk maps an allocated block by runs of
 * its sector bitmap, clear bits not allocated here (the parent shows).
 */
static int vhd_map(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m)
{
	struct vhd *s = img_priv(img);
	uint32_t idx;
	uint64_t in_block, n;
	bool alloc;

	if (s->type == VHD_TYPE_FIXED) {
		m->len = len;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->file_off = off;
		return 0;
	}
	if (m->write != IMG_MAP_NO_WRITE)
		return vhd_map_write(s, off, len, m);
	idx = (uint32_t)(off / s->block_size);
	in_block = off % s->block_size;
	alloc = s->bat[idx] != VHD_UNALLOCATED;
	n = s->block_size - in_block;
	if (alloc && s->type == VHD_TYPE_DIFF) {
		uint64_t block_off = (uint64_t)s->bat[idx] * VHD_SECTOR;
		uint64_t sec = in_block / VHD_SECTOR;
		uint8_t *bm;
		int ret;

		ret = img_cache_get(s->bitmaps, block_off, (void **)&bm);
		if (ret < 0)
			return ret;
		alloc = bit_is_set(bm, sec);
		n = (sec + 1) * VHD_SECTOR - in_block;
		for (uint64_t i = sec + 1;
		     i < s->block_size / VHD_SECTOR && n < len &&
		     bit_is_set(bm, i) == alloc;
		     i++)
			n += VHD_SECTOR;
		img_cache_put(s->bitmaps, bm);
	} else if (!alloc) {
		for (uint32_t i = idx + 1; i < s->n_entries && n < len &&
					   s->bat[i] == VHD_UNALLOCATED;
		     i++)
			n += s->block_size;
	}
	m->len = img_min(n, len);
	if (!alloc) {
		m->flags = s->type == VHD_TYPE_DIFF ? 0 : IMG_EXT_ZERO;
		return 0;
	}
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->file_off =
		(uint64_t)s->bat[idx] * VHD_SECTOR + s->bitmap_size + in_block;
	return 0;
}

static void vhd_footer_checksum(uint8_t *f)
{
	img_put_be32(f + F_CHECKSUM, 0);
	img_put_be32(f + F_CHECKSUM,
		     vhd_checksum(f, VHD_FOOTER_SIZE, F_CHECKSUM));
}

static int vhd_flush(struct img *img)
{
	struct vhd *s = img_priv(img);
	struct img_io *io = img_file(img);
	int ret;

	if (s->type == VHD_TYPE_FIXED ||
	    (s->dirty_lo >= s->dirty_hi && !s->footer_dirty && !s->bitmaps))
		return img_io_flush(io);
	/* Data first, then the metadata that points at it. */
	ret = img_io_flush(io);
	if (ret < 0)
		return ret;
	if (s->bitmaps) {
		ret = img_cache_write_back(s->bitmaps);
		if (ret < 0)
			return ret;
	}
	if (s->footer_dirty) {
		ret = img_io_pwrite(io, s->footer, VHD_FOOTER_SIZE,
				    s->file_end);
		if (ret < 0)
			return ret;
		ret = img_io_truncate(io, s->file_end + VHD_FOOTER_SIZE);
		if (ret < 0)
			return ret;
		s->footer_dirty = false;
	}
	if (s->dirty_lo < s->dirty_hi) {
		ret = img_table32_write(io, s->bat, s->dirty_lo, s->dirty_hi,
					s->bat_off, true);
		if (ret < 0)
			return ret;
		s->dirty_lo = UINT32_MAX;
		s->dirty_hi = 0;
	}
	return img_io_flush(io);
}

static int vhd_info(struct img *img, struct img_info *info)
{
	struct vhd *s = img_priv(img);

	info->cluster_size = s->type == VHD_TYPE_FIXED ? 0 : s->block_size;
	return 0;
}

static int vhd_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Every allocated block must lie inside the file and overlap no other. */
static int vhd_check(struct img *img, unsigned flags, struct img_check *res)
{
	struct vhd *s = img_priv(img);
	uint64_t file_size, per_block;
	uint32_t *order;
	uint32_t n = 0;
	int ret;

	if (s->type == VHD_TYPE_FIXED)
		return 0;
	ret = img_io_size(img_file(img), &file_size);
	if (ret < 0)
		return ret;
	per_block = s->bitmap_size + (uint64_t)s->block_size;
	order = malloc(((size_t)s->n_entries + 1) * sizeof(*order));
	if (!order)
		return img_error(-ENOMEM, "vpc: out of memory");
	for (uint32_t i = 0; i < s->n_entries; i++) {
		uint64_t off = (uint64_t)s->bat[i] * VHD_SECTOR;

		if (s->bat[i] == VHD_UNALLOCATED)
			continue;
		if (off < s->bat_off + (uint64_t)s->n_entries * 4 &&
		    off + per_block > s->bat_off) {
			img_check_corrupt(res,
					  "ERROR block %" PRIu32
					  " overlaps the BAT",
					  i);
		}
		if (off + per_block > file_size) {
			img_check_corrupt(
				res,
				"ERROR block %" PRIu32 " at %#" PRIx64
				" ends past the end of the file (size %" PRIu64
				"): the image has been truncated",
				i, off, file_size);
		}
		order[n++] = s->bat[i];
	}
	qsort(order, n, sizeof(*order), vhd_cmp_u32);
	for (uint32_t i = 1; i < n; i++)
		if ((uint64_t)(order[i] - order[i - 1]) * VHD_SECTOR <
		    per_block) {
			img_check_corrupt(res,
					  "ERROR blocks at sectors %" PRIu32
					  " and %" PRIu32 " overlap",
					  order[i - 1], order[i]);
		}
	free(order);
	res->has_stats = true;
	res->total_clusters = s->n_entries;
	res->allocated_clusters = n;
	res->image_end_offset = s->file_end + VHD_FOOTER_SIZE;
	return 0;
}

/* The parent's UUID and timestamp, for the differencing header. */
static int vhd_parent_ids(const char *path, const char *backing, uint8_t *h)
{
	uint8_t f[VHD_FOOTER_SIZE];
	struct img_io *io;
	uint64_t size;
	char *ppath;
	int ret;

	ret = img_path_relative(path, backing, &ppath);
	if (ret < 0)
		return ret;
	ret = img_io_open(ppath, IMG_IO_RDONLY, IMG_IO_AUTO, &io);
	free(ppath);
	if (ret < 0)
		return img_error(ret, "vpc: could not open parent '%s': %s",
				 backing, strerror(-ret));
	ret = img_io_size(io, &size);
	if (ret >= 0 && size < VHD_FOOTER_SIZE)
		ret = img_error(-EINVAL, "vpc: parent '%s' is not a vpc image",
				backing);
	if (ret >= 0)
		ret = img_io_pread(io, f, sizeof(f), size - VHD_FOOTER_SIZE);
	if (ret >= 0 && memcmp(f, "conectix", 8))
		ret = img_io_pread(io, f, sizeof(f), 0);
	img_io_close(io);
	if (ret < 0)
		return ret;
	if (memcmp(f, "conectix", 8))
		return img_error(-EINVAL, "vpc: parent '%s' is not a vpc image",
				 backing);
	memcpy(h + H_PARENT_UUID, f + F_UUID, 16);
	img_put_be32(h + H_PARENT_TIME, img_be32(f + F_TIMESTAMP));
	return 0;
}

/* Append one locator of UTF-8 name (as UTF-16LE) to the data area. */
static int vhd_add_locator(uint8_t *h, unsigned i, const char *code,
			   const char *name, uint64_t *next, uint8_t **data,
			   size_t *data_len)
{
	uint8_t *e = h + H_LOCATORS + 24 * i, *u16, *grown;
	size_t u16_len, slot;
	int ret;

	ret = img_utf8_to_utf16(name, false, &u16, &u16_len);
	if (ret < 0)
		return ret;
	slot = img_align_up(u16_len ? u16_len : 1, VHD_SECTOR);
	grown = realloc(*data, *data_len + slot);
	if (!grown) {
		free(u16);
		return img_error(-ENOMEM, "vpc: out of memory");
	}
	memset(grown + *data_len, 0, slot);
	memcpy(grown + *data_len, u16, u16_len);
	free(u16);
	memcpy(e, code, 4);
	img_put_be32(e + 4, (uint32_t)slot);
	img_put_be32(e + 8, (uint32_t)u16_len);
	img_put_be64(e + 16, *next);
	*data = grown;
	*data_len += slot;
	*next += slot;
	return 0;
}

/*
 * Parent locators: W2ru (".\name", relative to the child) when the name is
 * relative, and W2ku (the parent's absolute path), plus the Unicode name.
 */
static int vhd_add_locators(const char *path, const char *backing, uint8_t *h,
			    uint64_t *next, uint8_t **data, size_t *data_len)
{
	uint8_t *u16;
	size_t u16_len;
	char *abs = NULL, *joined;
	unsigned n = 0;
	int ret;

	ret = img_utf8_to_utf16(backing, true, &u16, &u16_len);
	if (ret < 0)
		return ret;
	memcpy(h + H_PARENT_NAME, u16, img_min(u16_len, 510));
	free(u16);
	if (backing[0] != '/') {
		char *rel = malloc(strlen(backing) + 3);

		if (!rel)
			return img_error(-ENOMEM, "vpc: out of memory");
		sprintf(rel, ".\\%s", backing);
		for (char *c = rel; *c; c++)
			if (*c == '/')
				*c = '\\';
		ret = vhd_add_locator(h, n++, "W2ru", rel, next, data,
				      data_len);
		free(rel);
		if (ret < 0)
			return ret;
	}
	ret = img_path_relative(path, backing, &joined);
	if (ret < 0)
		return ret;
	abs = realpath(joined, NULL);
	ret = vhd_add_locator(h, n, "W2ku", abs ? abs : joined, next, data,
			      data_len);
	free(abs);
	free(joined);
	return ret;
}

static int vhd_create(const char *path, struct img_io *file,
		      const struct img_create_opts *opts)
{
	uint8_t footer[VHD_FOOTER_SIZE], header[VHD_HEADER_SIZE];
	const char *subformat = "dynamic";
	bool force_size = false, fixed;
	uint64_t sectors = opts->size / VHD_SECTOR, size, bat_bytes, next;
	uint8_t *bat = NULL, *loc = NULL;
	size_t loc_len = 0;
	uint16_t cyls = 0;
	uint8_t heads = 0, spt = 0;
	uint32_t entries, type;
	int ret;

	ret = img_opt_str(opts, "subformat", &subformat);
	if (ret >= 0)
		ret = img_opt_bool(opts, "force_size", &force_size);
	if (ret < 0)
		return ret;
	if (strcmp(subformat, "dynamic") && strcmp(subformat, "fixed"))
		return img_error(-EINVAL,
				 "vpc: invalid subformat '%s' (dynamic, fixed)",
				 subformat);
	fixed = !strcmp(subformat, "fixed");
	/* A child has its parent's exact size, not a CHS rounding of it. */
	if (opts->backing_file)
		force_size = true;
	if (opts->backing_file && fixed)
		return img_error(-EINVAL,
				 "vpc: a fixed disk cannot have a parent");
	if (opts->backing_fmt && strcmp(opts->backing_fmt, "vpc"))
		return img_error(
			-ENOTSUP,
			"vpc: the parent of a differencing disk must be vpc, not '%s'",
			opts->backing_fmt);
	if (force_size) {
		cyls = 65535;
		heads = 16;
		spt = 255;
	} else {
		uint64_t want = img_min(VHD_MAX_GEOMETRY, sectors);

		/* Round up to a geometry, as qemu-img does. */
		for (uint64_t i = 0;
		     want > (uint64_t)cyls * heads * spt && i < 1u << 20; i++)
			vhd_geometry(want + i, &cyls, &heads, &spt);
	}
	if ((uint64_t)cyls * heads * spt != VHD_MAX_GEOMETRY)
		sectors = (uint64_t)cyls * heads * spt;
	if (sectors > VHD_MAX_SECTORS)
		return img_error(-EFBIG,
				 "vpc: disk size %" PRIu64
				 " is too large, the maximum is 2040 GiB",
				 opts->size);
	size = sectors * VHD_SECTOR;
	type = fixed		  ? VHD_TYPE_FIXED :
	       opts->backing_file ? VHD_TYPE_DIFF :
				    VHD_TYPE_DYNAMIC;

	memset(footer, 0, sizeof(footer));
	memcpy(footer + F_COOKIE, "conectix", 8);
	img_put_be32(footer + F_FEATURES, 2);
	img_put_be32(footer + F_VERSION, 0x00010000);
	img_put_be64(footer + F_DATA_OFFSET, fixed ? UINT64_MAX : 512);
	img_put_be32(footer + F_TIMESTAMP, (uint32_t)(time(NULL) - VHD_EPOCH));
	memcpy(footer + F_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
	img_put_be32(footer + F_CREATOR_VER, 0x00050003);
	memcpy(footer + F_CREATOR_OS, "Wi2k", 4);
	img_put_be64(footer + F_ORIG_SIZE, size);
	img_put_be64(footer + F_CUR_SIZE, size);
	img_put_be16(footer + F_CYLS, cyls);
	footer[F_HEADS] = heads;
	footer[F_SPT] = spt;
	img_put_be32(footer + F_TYPE, type);
	ret = img_uuid_generate(footer + F_UUID);
	if (ret < 0)
		return ret;
	vhd_footer_checksum(footer);

	ret = img_io_truncate(file, 0);
	if (ret < 0)
		return ret;
	if (fixed) {
		ret = img_io_truncate(file, size);
		if (ret >= 0)
			ret = img_io_pwrite(file, footer, sizeof(footer), size);
		return ret;
	}

	entries =
		(uint32_t)((size + VHD_DEFAULT_BLOCK - 1) / VHD_DEFAULT_BLOCK);
	bat_bytes = img_align_up(entries ? entries * 4ull : 1, VHD_SECTOR);
	memset(header, 0, sizeof(header));
	memcpy(header + H_COOKIE, "cxsparse", 8);
	img_put_be64(header + H_DATA_OFFSET, UINT64_MAX);
	img_put_be64(header + H_TABLE_OFFSET, 3 * VHD_SECTOR);
	img_put_be32(header + H_VERSION, 0x00010000);
	img_put_be32(header + H_MAX_ENTRIES, entries);
	img_put_be32(header + H_BLOCK_SIZE, VHD_DEFAULT_BLOCK);
	next = 3 * VHD_SECTOR + bat_bytes;
	if (opts->backing_file) {
		ret = vhd_parent_ids(path, opts->backing_file, header);
		if (ret >= 0)
			ret = vhd_add_locators(path, opts->backing_file, header,
					       &next, &loc, &loc_len);
		if (ret < 0)
			goto out;
	}
	img_put_be32(header + H_CHECKSUM,
		     vhd_checksum(header, sizeof(header), H_CHECKSUM));
	bat = malloc(bat_bytes);
	if (!bat) {
		ret = img_error(-ENOMEM, "vpc: out of memory");
		goto out;
	}
	memset(bat, 0xff, bat_bytes);
	ret = img_io_pwrite(file, footer, sizeof(footer), 0);
	if (ret >= 0)
		ret = img_io_pwrite(file, header, sizeof(header), VHD_SECTOR);
	if (ret >= 0)
		ret = img_io_pwrite(file, bat, bat_bytes, 3 * VHD_SECTOR);
	if (ret >= 0 && loc_len)
		ret = img_io_pwrite(file, loc, loc_len, next - loc_len);
	if (ret >= 0)
		ret = img_io_pwrite(file, footer, sizeof(footer), next);
out:
	free(bat);
	free(loc);
	return ret;
}

static const struct img_opt_desc vhd_create_opts[] = {
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ "subformat", IMG_OPT_STR,
	  "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ",
	  NULL },
	{ "force_size", IMG_OPT_BOOL,
	  "Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation",
	  NULL },
	{ "backing_file", IMG_OPT_STR,
	  "Parent of a differencing disk (a vpc image)", NULL },
	{ "backing_fmt", IMG_OPT_STR, "Format of the parent (vpc)", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct img_create_ops vhd_create_ops = {
	.create = vhd_create,
	.opts = vhd_create_opts,
};

const struct img_driver vpc_driver = {
	.name = "vpc",
	.priv_size = sizeof(struct vhd),
	.probe = vhd_probe,
	.open = vhd_open,
	.close = vhd_close,
	.flush = vhd_flush,
	.map = vhd_map,
	.commit = vhd_commit,
	.create = &vhd_create_ops,
	.info = vhd_info,
	.check = vhd_check,
};
